//! The registry: storage, configuration and the dispatch from routes to the handlers of each
//! resource (manifests, blobs, uploads, tags). Handlers return typed errors; this is the one
//! place they become HTTP responses.

use crate::config::Config;
use crate::error::{ErrorCode, RegistryError};
use crate::http::{Body, BodyReader, Headers, Method, Request, Response, query_param};
use crate::names::Tag;
use crate::router::Route;
use crate::storage::{KeyValueStore, ObjectStore};
use crate::uploads::StartUpload;

pub type Result<T> = std::result::Result<T, RegistryError>;

pub struct Registry<O, K> {
    pub objects: O,
    pub kv: K,
    pub config: Config,
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    pub fn new(objects: O, kv: K, config: Config) -> Self {
        Self { objects, kv, config }
    }

    /// Answers one request. Never fails: every error becomes an OCI error response.
    pub async fn handle<B: BodyReader<Raw = O::Upload>>(&self, req: Request<B>) -> Response<O::Body> {
        let Request { method, path, query, headers, mut body } = req;
        let response = match self.dispatch(method, &path, &query, &headers, &mut body).await {
            Ok(r) => r,
            Err(e) => {
                drain(&mut body).await;
                e.into()
            }
        };
        // Distribution sends the API version on every response; clients use it to detect a
        // registry behind a proxy.
        response.header("Docker-Distribution-API-Version", "registry/2.0")
    }

    async fn dispatch<B: BodyReader<Raw = O::Upload>>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        h: &Headers,
        body: &mut B,
    ) -> Result<Response<O::Body>> {
        if self.config.selftest
            && let Some(response) = self.selftest(method, path, query, h, body).await
        {
            return response;
        }
        let route = Route::parse(path)?;
        if self.config.read_only && method.writes() {
            return Err(RegistryError::new(ErrorCode::Unsupported).with_message("the registry is read-only"));
        }
        let param = |key: &str| query_param(query, key);
        use Method::*;
        match (route, method) {
            (Route::Base, Get | Head) => Ok(json_response(b"{}".to_vec(), method == Head)),
            (Route::Manifest(n, r), Get | Head) => self.get_manifest(&n, &r, h, method == Head).await,
            (Route::Manifest(n, r), Put) => {
                let extra_tags = query.iter().filter(|(k, _)| k == "tag").map(|(_, v)| Tag::parse(v));
                let extra_tags = extra_tags.collect::<Result<Vec<_>>>()?;
                self.put_manifest(&n, &r, &extra_tags, h, body).await
            }
            (Route::Manifest(n, r), Delete) => self.delete_manifest(&n, &r).await,
            (Route::Blob(n, d), Get | Head) => self.get_blob(&n, &d, h, method == Head).await,
            (Route::Blob(n, d), Delete) => self.delete_blob(&n, &d).await,
            (Route::UploadStart(n), Post) => {
                let params = StartUpload { digest: param("digest"), mount: param("mount"), from: param("from") };
                self.start_upload(&n, &params, h, body).await
            }
            (Route::Upload(n, id), Get) => self.upload_status(&n, &id).await,
            (Route::Upload(n, id), Patch) => self.patch_upload(&n, &id, h, body).await,
            (Route::Upload(n, id), Put) => self.finish_upload(&n, &id, param("digest"), h, body).await,
            (Route::Upload(n, id), Delete) => self.cancel_upload(&n, &id).await,
            (Route::TagsList(n), Get) => self.list_tags(&n, query).await,
            (Route::Catalog, Get) => self.catalog(query).await,
            (Route::Referrers(n, d), Get) => self.list_referrers(&n, &d, query).await,
            _ => Err(RegistryError::new(ErrorCode::Unsupported).with_message("method not allowed on this endpoint")),
        }
    }
}

/// A 200 JSON response; for HEAD the length without the body.
pub fn json_response<S>(body: Vec<u8>, head: bool) -> Response<S> {
    let r =
        Response::new(200).header("Content-Type", "application/json").header("Content-Length", body.len().to_string());
    if head { r } else { r.body(Body::Bytes(body)) }
}

/// Reads a whole request body of at most `limit` bytes (manifests); larger -> 413.
pub async fn read_limited<B: BodyReader>(body: &mut B, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.chunk().await.map_err(body_error)? {
        if out.len() + chunk.len() > limit {
            return Err(
                RegistryError::new(ErrorCode::PayloadTooLarge).with_detail(serde_json::json!({ "limit": limit }))
            );
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Most a refused request's body is read before answering.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads what is left of a refused request's body (up to [`DRAIN_LIMIT`]) and drops it: a
/// client still sending would otherwise see the connection reset instead of the OCI error.
async fn drain<B: BodyReader>(body: &mut B) {
    let mut read = 0;
    while read < DRAIN_LIMIT {
        match body.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            _ => return,
        }
    }
}

/// The client's request body broke off mid-way.
pub fn body_error(e: String) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUploadInvalid).with_message("the request body could not be read").with_detail(e)
}
