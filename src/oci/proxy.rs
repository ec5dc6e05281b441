//! Pull-through cache mode (`WHARF_UPSTREAM`; Distribution's proxy mode):
//! wharf mirrors another registry, fetching what a client pulls the first time it is asked for.
//!
//! - **Manifests** are fetched whole (at most 4 MiB), checked against the digest asked for,
//!   and stored in R2 before they are served, by the same code as a push. A tag's KV entry is
//!   written after the response.
//! - **Tags** remember when they were last checked upstream (`cachedAt` in the KV metadata).
//!   Within `WHARF_UPSTREAM_TAG_TTL_SECONDS` the cached digest is served as is. After that, one
//!   HEAD upstream tells whether the tag moved (HEADs do not count against Docker Hub's pull
//!   limit). When the upstream cannot be reached or fails, the cached digest is served.
//! - **Blobs** are verified by R2 against their digest as they are stored, so nothing unverified
//!   ever becomes visible under one. Up to [`TEE_MAX`], they stream from the upstream to the
//!   client (`no-store`: not verified when sent) while a second reader of the same stream is
//!   stored after the response. Larger ones are stored first and then served from R2.
//! - **Writes** (push, delete) are 405 UNSUPPORTED: the upstream is the source of truth.
//!
//! The upstream's auth is the Docker token flow: a 401 with a Bearer challenge, then GET on the
//! realm with Basic credentials (or none), then the request again with the token. The token is
//! cached per isolate until it expires. A Basic challenge gets the credentials directly.
//! Credentials only go to an https realm of an https upstream.
//! Redirects (Docker Hub sends blobs to a CDN) are followed without credentials.

use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::{Body, Method, OCTET_STREAM, Response, percent_encode};
use crate::base::names::{Digest, Reference, RepositoryName, Tag, UploadId};
use crate::config::MAX_MANIFEST_SIZE;
use crate::config::upstream::UpstreamConfig;
use crate::oci::blobs::BlobLink;
use crate::oci::manifests::format::{Manifest, MediaType};
use crate::registry::host::{Upstream, UpstreamRequest, UpstreamResponse};
use crate::registry::{Background, Registry, Result};
use crate::storage::keys::{self, TagRecord};
use crate::storage::memo::Boarding;
use crate::storage::{KeyValueStore, ObjectStore, PutOptions};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;

/// Largest blob streamed to the client while being stored; larger ones are stored first.
const TEE_MAX: u64 = 32 * 1024 * 1024;

/// Most redirects followed for one request (Docker Hub: one, to its CDN).
const MAX_REDIRECTS: usize = 5;

fn upstream_failed(detail: serde_json::Value) -> RegistryError {
    RegistryError::new(ErrorCode::UpstreamFailed).with_detail(detail)
}

/// The upstream could not be reached, or its answer not read.
fn upstream_unreachable(reason: String) -> RegistryError {
    upstream_failed(json!({ "reason": reason }))
}

/// Docker's token answer: `token` (or OAuth2's `access_token`), and maybe `expires_in`. Each is
/// taken when it is usable and skipped when not, as Docker's client does with what it does not
/// understand; only the answer as a whole must be a JSON object.
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default, deserialize_with = "crate::base::de::lenient")]
    token: Option<String>,
    #[serde(default, deserialize_with = "crate::base::de::lenient")]
    access_token: Option<String>,
    #[serde(default, deserialize_with = "crate::base::de::lenient")]
    expires_in: Option<u64>,
}

/// A `WWW-Authenticate` challenge: the scheme (lower-cased) and its parameters.
#[derive(Debug, PartialEq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Challenge {
    /// Parses `Bearer realm="...",service="...",scope="..."` (RFC 9110 §11.6.1, one challenge).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let (scheme, mut rest) = value.split_once(' ').unwrap_or((value, ""));
        let mut params = HashMap::new();
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            let Some((key, after)) = rest.split_once('=') else { break };
            let key = key.trim().to_ascii_lowercase();
            let (val, after) = match after.strip_prefix('"') {
                Some(quoted) => {
                    let end = quoted.find('"')?;
                    (&quoted[..end], &quoted[end + 1..])
                }
                None => after.split_once(',').unwrap_or((after, "")),
            };
            params.insert(key, val.trim().to_owned());
            rest = after;
        }
        Some(Self { scheme: scheme.to_ascii_lowercase(), params })
    }
}

thread_local! {
    /// Authorization values by upstream user and repository, with when they expire (seconds).
    /// One isolate serves many requests, so a pull's manifest and blobs share one token.
    static AUTHORIZATIONS: RefCell<HashMap<String, (String, u64)>> = RefCell::new(HashMap::new());
}

/// Most upstream authorizations one isolate keeps.
const MAX_CACHED_AUTHORIZATIONS: usize = 1000;

/// Longest a token is kept, whatever its issuer says.
const MAX_TOKEN_SECS: u64 = 24 * 60 * 60;

/// How long a token lives when its issuer does not say (the Docker token spec's default).
const DEFAULT_TOKEN_SECS: u64 = 60;

/// `Location` of a redirect, resolved against the URL that answered it.
fn redirect_target(from: &str, location: &str) -> Option<String> {
    if location.starts_with("https://") || location.starts_with("http://") {
        return Some(location.to_owned());
    }
    let scheme_end = from.find("://")? + 3;
    let origin_end = from[scheme_end..].find('/').map_or(from.len(), |i| scheme_end + i);
    location.starts_with('/').then(|| format!("{}{location}", &from[..origin_end]))
}

/// The Accept of manifest requests upstream: every type wharf stores. Clients' own Accept
/// headers are applied to the cached manifest afterwards, as for a pushed one.
fn accept_manifests() -> String {
    MediaType::ALL.map(MediaType::as_str).join(", ")
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    fn upstream_client(&self) -> Result<&dyn Upstream<O>> {
        self.upstream.as_deref().ok_or_else(|| RegistryError::internal("cache mode without an upstream client"))
    }

    /// An upstream answer's body, whole (at most `limit` bytes).
    async fn read_upstream(&self, body: Option<O::Upload>, limit: usize) -> Result<Vec<u8>> {
        match body {
            Some(b) => self.upstream_client()?.read(b, limit).await.map_err(upstream_unreachable),
            None => Ok(Vec::new()),
        }
    }

    /// Stores a blob read from the upstream, verified by the store against its digest, and links
    /// it. Returns the object holding it; `None`: the bytes did not match, nothing was stored.
    pub(crate) async fn store_pulled_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        length: u64,
        body: O::Upload,
    ) -> Result<Option<String>> {
        let key = keys::blob_by_upload(&UploadId::random()?);
        let options = PutOptions { content_type: Some(OCTET_STREAM.into()), ..Default::default() };
        if !self.objects.put_verified(&key, body, length, digest, options).await? {
            crate::base::log::error(&format!("pull-through cache: the upstream's bytes for {digest} do not match it"));
            return Ok(None);
        }
        self.publish(name, digest, &BlobLink { object: key.clone(), size: length }).await?;
        Ok(Some(key))
    }

    /// When another request of this isolate is fetching the blob from the upstream, waits for
    /// it to be stored and returns its link; `None` when no fetch is in flight, or the one in
    /// flight stored nothing (this request then fetches it itself).
    pub(crate) async fn landed_pull(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<BlobLink>> {
        let Some(flight) = self.memo.flights.in_flight(&flight_key(name, digest)) else { return Ok(None) };
        flight.landed().await;
        self.stored_blob_link(name, digest).await
    }

    /// Sends a request for `path` to the upstream, authenticating as it asks and following
    /// redirects (without credentials: a CDN must not see them).
    async fn upstream_send(
        &self,
        up: &UpstreamConfig,
        method: Method,
        repository: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<UpstreamResponse<O::Upload>> {
        let client = self.upstream_client()?;
        let user = up.credentials.as_ref().map_or("", |(u, _)| u.as_str());
        let cache_key = format!("{user}@{}/{repository}", up.url);
        let now = self.now_secs();
        let cached =
            AUTHORIZATIONS.with_borrow(|a| a.get(&cache_key).filter(|(_, exp)| *exp > now).map(|(v, _)| v.clone()));
        let request = |url: String, authorization: Option<&str>| {
            let mut headers = Vec::new();
            if let Some(a) = accept {
                headers.push(("Accept", a.to_owned()));
            }
            if let Some(a) = authorization {
                headers.push(("Authorization", a.to_owned()));
            }
            UpstreamRequest { method, url, headers }
        };
        let send = |r: UpstreamRequest| async move { client.fetch(r).await.map_err(upstream_unreachable) };
        let url = format!("{}{path}", up.url);
        let mut response = send(request(url.clone(), cached.as_deref())).await?;
        if response.status == 401 {
            let challenge = response.headers.get("www-authenticate").and_then(Challenge::parse);
            let authorization = match challenge {
                Some(c) if c.scheme == "bearer" => Some(self.upstream_token(up, &c, repository).await?),
                Some(c) if c.scheme == "basic" => up.basic().map(|b| (b, u64::MAX)),
                _ => None,
            };
            if let Some((authorization, expires)) = authorization {
                AUTHORIZATIONS.with_borrow_mut(|a| {
                    // An isolate pulling very many repositories starts over rather than grow.
                    if a.len() >= MAX_CACHED_AUTHORIZATIONS {
                        a.clear();
                    }
                    a.insert(cache_key, (authorization.clone(), expires))
                });
                response = send(request(url.clone(), Some(&authorization))).await?;
            }
        }
        let mut url = url;
        for _ in 0..MAX_REDIRECTS {
            if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
                break;
            }
            let location = response.headers.get("location").unwrap_or_default();
            url = redirect_target(&url, location)
                .ok_or_else(|| upstream_failed(json!({ "reason": "redirect without a usable Location" })))?;
            response = send(request(url.clone(), None)).await?;
        }
        Ok(response)
    }

    /// The Docker token flow: a token for the challenge's scope, with the configured credentials
    /// (or anonymously). Returns the Authorization value and when it expires.
    async fn upstream_token(
        &self,
        up: &UpstreamConfig,
        challenge: &Challenge,
        repository: &str,
    ) -> Result<(String, u64)> {
        let client = self.upstream_client()?;
        // Credentials go to the realm: over TLS, unless the upstream itself is plain HTTP (a
        // registry on loopback or a private network).
        let secure_only = up.url.starts_with("https://");
        let realm = challenge
            .params
            .get("realm")
            .filter(|r| r.starts_with("https://") || (!secure_only && r.starts_with("http://")));
        let realm =
            realm.ok_or_else(|| upstream_failed(json!({ "reason": "challenge without an acceptable realm" })))?;
        let default_scope = format!("repository:{repository}:pull");
        let scope = challenge.params.get("scope").unwrap_or(&default_scope);
        let mut url = format!("{realm}{}scope={}", if realm.contains('?') { '&' } else { '?' }, percent_encode(scope));
        if let Some(service) = challenge.params.get("service") {
            url.push_str(&format!("&service={}", percent_encode(service)));
        }
        let headers = up.basic().map(|b| vec![("Authorization", b)]).unwrap_or_default();
        let response =
            client.fetch(UpstreamRequest { method: Method::Get, url, headers }).await.map_err(upstream_unreachable)?;
        if response.status != 200 {
            return Err(upstream_failed(json!({ "tokenStatus": response.status })));
        }
        let body = self.read_upstream(response.body, 64 * 1024).await?;
        let answer: TokenAnswer = crate::base::de::from_object(&body)
            .map_err(|_| upstream_failed(json!({ "reason": "the token answer is not JSON" })))?;
        let token = [answer.token, answer.access_token].into_iter().flatten().find(|t| !t.is_empty());
        let token = token.ok_or_else(|| upstream_failed(json!({ "reason": "the token answer has no token" })))?;
        // A little before it really expires, so that a request never carries a dying token.
        let lifetime = answer.expires_in.unwrap_or(DEFAULT_TOKEN_SECS).min(MAX_TOKEN_SECS).saturating_sub(5);
        let expires = self.now_secs().saturating_add(lifetime);
        Ok((format!("Bearer {token}"), expires))
    }

    /// What a tag points at in cache mode: the cached record while it is fresh, else what the
    /// upstream says (storing the manifest if it is new), else, when the upstream fails, the
    /// cached record however old. `None`: neither knows the tag.
    pub(crate) async fn resolve_tag_through(
        &self,
        up: &UpstreamConfig,
        name: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<TagRecord>> {
        let cached = self.tag_record(name, tag).await?;
        let now = self.now_secs();
        if let Some(record) = &cached
            && record.cached_at.is_some_and(|at| now.saturating_sub(at) < up.tag_ttl_secs)
        {
            return Ok(cached);
        }
        match self.check_upstream_tag(up, name, tag, cached.as_ref()).await {
            Err(e) if e.code == ErrorCode::UpstreamFailed && cached.is_some() => {
                crate::base::log::error(&format!(
                    "pull-through cache: serving {name}:{tag} from the cache: {}",
                    e.detail.unwrap_or_default()
                ));
                Ok(cached)
            }
            other => other,
        }
    }

    async fn check_upstream_tag(
        &self,
        up: &UpstreamConfig,
        name: &RepositoryName,
        tag: &Tag,
        cached: Option<&TagRecord>,
    ) -> Result<Option<TagRecord>> {
        let upstream_name = up.upstream_name(name);
        if let Some(cached) = cached {
            let path = format!("/v2/{upstream_name}/manifests/{tag}");
            let r = self.upstream_send(up, Method::Head, &upstream_name, &path, Some(&accept_manifests())).await?;
            match r.status {
                200 if r.headers.get("docker-content-digest") == Some(cached.digest.as_str()) => {
                    let record = TagRecord { cached_at: Some(self.now_secs()), ..cached.clone() };
                    self.defer(Background::Tag { name: name.clone(), tag: tag.clone(), record: record.clone() });
                    return Ok(Some(record));
                }
                // Moved (or no digest header): fetch it.
                200 => {}
                404 => return Ok(None),
                status => return Err(upstream_failed(json!({ "status": status }))),
            }
        }
        self.pull_manifest(up, name, &Reference::Tag(tag.clone())).await
    }

    /// Fetches a manifest from the upstream, checks it, and stores it like a push would (the
    /// tag in KV after the response). Returns what a tag pointing at it records; `None`: the
    /// upstream does not have it.
    pub(crate) async fn pull_manifest(
        &self,
        up: &UpstreamConfig,
        name: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<TagRecord>> {
        let upstream_name = up.upstream_name(name);
        let path = format!("/v2/{upstream_name}/manifests/{reference}");
        let r = self.upstream_send(up, Method::Get, &upstream_name, &path, Some(&accept_manifests())).await?;
        match r.status {
            200 => {}
            404 => return Ok(None),
            status => return Err(upstream_failed(json!({ "status": status }))),
        }
        let bytes = self.read_upstream(r.body, MAX_MANIFEST_SIZE).await?;
        let manifest = Manifest::parse(r.headers.get("content-type"), &bytes)
            .map_err(|e| upstream_failed(json!({ "reason": "invalid manifest", "detail": e.detail })))?;
        let digest = match reference {
            Reference::Digest(asked) if asked.recompute(&bytes) != *asked => {
                return Err(upstream_failed(json!({ "reason": "manifest does not match its digest" })));
            }
            Reference::Digest(asked) => asked.clone(),
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        let record = TagRecord {
            digest: digest.to_string(),
            media_type: manifest.media_type.as_str().to_owned(),
            size: bytes.len() as u64,
            cached_at: Some(self.now_secs()),
        };
        self.store_manifest(name, &digest, bytes, &manifest, &[]).await?;
        if let Reference::Tag(tag) = reference {
            self.defer(Background::Tag { name: name.clone(), tag: tag.clone(), record: record.clone() });
        }
        Ok(Some(record))
    }

    /// GET or HEAD of a blob this cache does not hold: from the upstream, stored after the
    /// response. A Range is not passed on: the whole blob is sent (200), which RFC 9110 allows,
    /// so that it can be stored.
    pub(crate) async fn pull_blob(
        &self,
        up: &UpstreamConfig,
        name: &RepositoryName,
        digest: &Digest,
        head: bool,
    ) -> Result<Response<O::Body>> {
        // A GET holds the isolate's fetch of this blob until it is stored (see `Flights`).
        let flight = match self.memo.flights.board(&flight_key(name, digest)) {
            Boarding::Fetch(guard) if !head => Some(guard),
            _ => None,
        };
        let upstream_name = up.upstream_name(name);
        let path = format!("/v2/{upstream_name}/blobs/{digest}");
        let method = if head { Method::Head } else { Method::Get };
        let r = self.upstream_send(up, method, &upstream_name, &path, None).await?;
        match r.status {
            200 => {}
            404 => return Err(RegistryError::new(ErrorCode::BlobUnknown).with_detail(digest.to_string())),
            status => return Err(upstream_failed(json!({ "status": status }))),
        }
        let length = r.headers.content_length();
        let mut response = Response::new(200)
            .header("Content-Type", OCTET_STREAM)
            .header("Docker-Content-Digest", digest.to_string())
            .header("ETag", crate::oci::caching::etag(digest));
        if let Some(length) = length {
            response = response.header("Content-Length", length.to_string());
        }
        // Bytes passed on as they arrive are not verified yet: no cache may keep them.
        let Some(body) = r.body.filter(|_| !head) else { return Ok(response.header("Cache-Control", "no-store")) };
        let client = self.upstream_client()?;
        let body = match length {
            // Small: streamed to the client and stored after the response. The two readers of
            // one stream buffer what the slower has not taken, at most this much.
            Some(length) if length > 0 && length <= TEE_MAX => {
                let (to_client, to_store) = client.tee(body, length).map_err(RegistryError::internal)?;
                let (name, digest) = (name.clone(), digest.clone());
                self.defer(Background::Blob { name, digest, length, body: to_store, flight });
                to_client
            }
            // Large: stored first (R2 checks the digest as it writes), then served from R2,
            // verified and cacheable. The client waits for the whole transfer before the first
            // byte, but no memory holds more than a stream's chunk, and nothing depends on the
            // time `waitUntil` leaves after a response.
            Some(length) if length > 0 && length <= crate::oci::uploads::MAX_SINGLE_PUT => {
                let Some(key) = self.store_pulled_blob(name, digest, length, body).await? else {
                    return Err(upstream_failed(json!({ "reason": "blob does not match its digest" })));
                };
                let (_, stored) = self.objects.get(&key, None).await?.ok_or_else(|| {
                    RegistryError::internal(format!("pull-through cache: {key} missing right after its put"))
                })?;
                return Ok(response.header("Cache-Control", self.cache_immutable(name)).body(Body::Stream(stored)));
            }
            // No length (or above one put): passed on, not stored.
            _ => client.pass(body),
        };
        Ok(response.header("Cache-Control", "no-store").body(Body::Stream(body)))
    }
}

/// A blob's key among the fetches in flight.
fn flight_key(name: &RepositoryName, digest: &Digest) -> String {
    format!("{name}@{digest}")
}

/// The answer to a write in cache mode.
pub(crate) fn writes_refused(up: &UpstreamConfig) -> RegistryError {
    RegistryError::new(ErrorCode::Unsupported)
        .with_message(format!("this registry is a pull-through cache of {}: push and delete there", up.url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/nginx:pull");
        let c = Challenge::parse(r#"Basic realm="wharf", charset=UTF-8"#).unwrap();
        assert_eq!(
            (c.scheme.as_str(), c.params["realm"].as_str(), c.params["charset"].as_str()),
            ("basic", "wharf", "UTF-8")
        );
        assert_eq!(Challenge::parse("Bearer").unwrap().params.len(), 0);
        assert!(Challenge::parse(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn redirects_resolve_against_the_answering_url() {
        assert_eq!(
            redirect_target("https://a.io/v2/x", "https://cdn.io/blob?sig=1").as_deref(),
            Some("https://cdn.io/blob?sig=1")
        );
        assert_eq!(redirect_target("https://a.io:5000/v2/x", "/other").as_deref(), Some("https://a.io:5000/other"));
        assert_eq!(redirect_target("https://a.io/v2/x", "relative"), None);
    }
}
