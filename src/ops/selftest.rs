//! Test-only endpoints, compiled in only with the `selftest` feature (never into the release
//! bundle) and served only when `WHARF_SELFTEST` is set:
//! the storage contract suite over the real bindings, the benchmark's baseline put and listing,
//! the wasm memory high-water mark, and a deliberate trap. Outside `/v2/` on purpose.

use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::{BodyReader, Headers, Method, OCTET_STREAM, Response, query_param};
use crate::base::names::{Digest, UploadId};
use crate::registry::{Registry, Result, json_response, read_limited};
use crate::storage::keys;
use crate::storage::{KeyValueStore, ListFrom, ObjectStore, PutOptions, suite};
use serde::Serialize;

/// `POST`: runs the storage contract suite (see [`crate::storage::suite`]).
pub const SUITE_PATH: &str = "/_wharf/selftest";
/// `PUT ?digest=`: one store-verified put of the body, what an upload costs without wharf.
pub const PUT_PATH: &str = "/_wharf/selftest/put";
/// `PUT`: the body stored with one R2 put and one KV put, the least storage a manifest push to a
/// tag needs: the floor the benchmark compares manifest pushes with.
pub const FLOOR_PATH: &str = "/_wharf/selftest/floor";
/// `GET ?prefix=&after=&n=`: one R2 listing of up to `n` keys under `prefix` after key `after`,
/// the least storage a page of `tags/list` or `_catalog` needs: the floor the scale benchmark
/// compares pages with.
pub const FLOOR_LIST_PATH: &str = "/_wharf/selftest/list";
/// `GET`: the size of the Worker's wasm memory.
pub const MEMORY_PATH: &str = "/_wharf/selftest/memory";
/// `POST`: panics (a trap: the wasm is built with panic=abort), so that the end-to-end tests can
/// check that the next request is served by a fresh instance (`src/entry.mjs`).
pub const TRAP_PATH: &str = "/_wharf/selftest/trap";

/// The wasm linear memory's size. It never shrinks, so this is the high-water mark of wharf's
/// own allocations since the isolate started. `None` natively.
fn wasm_memory_bytes() -> Option<usize> {
    #[cfg(target_arch = "wasm32")]
    return Some(core::arch::wasm32::memory_size(0) * 65536);
    #[cfg(not(target_arch = "wasm32"))]
    None
}

/// The answer of [`MEMORY_PATH`]: `{"wasmMemoryBytes"}`, null natively.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Memory {
    wasm_memory_bytes: Option<usize>,
}

/// The answer of [`FLOOR_LIST_PATH`]: `{"keys"}`, how many the page held.
#[derive(Serialize)]
struct Listed {
    keys: usize,
}

/// The answer of [`SUITE_PATH`]: each store's checks, `{"objects":[...],"kv":[...]}`.
#[derive(Serialize)]
struct SuiteResults {
    objects: Vec<suite::CaseResult>,
    kv: Vec<suite::CaseResult>,
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// The answer of a self-test endpoint, or `None` when the request is for another path.
    pub(crate) async fn selftest<B: BodyReader<Raw = O::Upload>>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        headers: &Headers,
        body: &mut B,
    ) -> Option<Result<Response<O::Body>>> {
        Some(match (method, path) {
            (Method::Post, SUITE_PATH) => self.run_suite().await,
            (Method::Put, PUT_PATH) => self.baseline_put(query, headers, body).await,
            (Method::Put, FLOOR_PATH) => self.floor_put(body).await,
            (Method::Get, FLOOR_LIST_PATH) => self.floor_list(query).await,
            (Method::Get, MEMORY_PATH) => {
                let body = serde_json::to_vec(&Memory { wasm_memory_bytes: wasm_memory_bytes() });
                body.map(|b| json_response(b, false)).map_err(RegistryError::internal)
            }
            (Method::Post, TRAP_PATH) => panic!("self-test trap"),
            _ => return None,
        })
    }

    async fn run_suite(&self) -> Result<Response<O::Body>> {
        let prefix = keys::selftest_run(&UploadId::random()?);
        let objects = suite::run_objects(&self.objects, &prefix).await;
        let kv = suite::run_kv(&self.kv, &prefix).await;
        let body = serde_json::to_vec(&SuiteResults { objects, kv }).map_err(RegistryError::internal)?;
        Ok(json_response(body, false))
    }

    async fn floor_put<B: BodyReader>(&self, body: &mut B) -> Result<Response<O::Body>> {
        let bytes = read_limited(body, crate::config::MAX_MANIFEST_SIZE).await?;
        let digest = Digest::sha256_of(&bytes).to_string();
        // One after the other, as any registry must: a tag written before its bytes could be
        // read pointing at nothing.
        self.objects.put(keys::SELFTEST_FLOOR, bytes, PutOptions::default()).await?;
        self.kv.put(keys::SELFTEST_FLOOR, &digest, None).await?;
        Ok(Response::new(201).header("Docker-Content-Digest", digest).header("Content-Length", "0"))
    }

    async fn floor_list(&self, query: &[(String, String)]) -> Result<Response<O::Body>> {
        let prefix = query_param(query, "prefix").unwrap_or_default();
        let from = query_param(query, "after").map_or(ListFrom::Beginning, ListFrom::After);
        // A listing returns at most 1,000 keys (`ObjectStore::list`'s contract, R2's limit).
        let n = query_param(query, "n").and_then(|n| n.parse::<u32>().ok()).unwrap_or(100).min(1000);
        let page = self.objects.list(prefix, from, n).await?;
        let body = serde_json::to_vec(&Listed { keys: page.objects.len() }).map_err(RegistryError::internal)?;
        Ok(json_response(body, false))
    }

    async fn baseline_put<B: BodyReader<Raw = O::Upload>>(
        &self,
        query: &[(String, String)],
        headers: &Headers,
        body: &mut B,
    ) -> Result<Response<O::Body>> {
        let digest = Digest::parse(query_param(query, "digest").unwrap_or_default())?;
        let length = headers.content_length().unwrap_or_default();
        let raw = body.take_raw().ok_or_else(|| RegistryError::internal("body already read"))?;
        if !self
            .objects
            .put_verified(
                &keys::selftest_put(&digest),
                raw,
                length,
                &digest,
                PutOptions { content_type: Some(OCTET_STREAM.into()), ..Default::default() },
            )
            .await?
        {
            return Err(RegistryError::new(ErrorCode::DigestInvalid));
        }
        Ok(Response::new(201).header("Content-Length", "0"))
    }
}
