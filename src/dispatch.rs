//! The dispatch from routes to the handlers of each resource (manifests, blobs, uploads, tags),
//! the token and admin endpoints, and the work left for after the response. Handlers return
//! typed errors; this is the one place they become HTTP responses.

use crate::auth::access::Actions;
use crate::auth::{AuthConfig, Identity};
use crate::base::cors::{self, CorsOrigins};
use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::{Body, BodyReader, Headers, Method, Request, Response, query_param};
use crate::base::names::{RepositoryName, Tag};
use crate::base::router::{Route, TOKEN_PATH};
use crate::config::GcMode;
use crate::oci::uploads::StartUpload;
use crate::ops::notify::RequestRecord;
use crate::registry::{Background, Registry, Result, json_response};
use crate::storage::{KeyValueStore, ObjectStore};
use serde_json::json;

/// The admin endpoint that runs a garbage collection (with `WHARF_ADMIN_TOKEN`).
pub const ADMIN_GC_PATH: &str = "/_wharf/gc";

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Answers one request. Never fails: every error becomes an OCI error response. Logs one
    /// line (see `log`) and names the request in `X-Request-Id`.
    pub async fn handle<B: BodyReader<Raw = O::Upload>>(&self, req: Request<B>) -> Response<O::Body> {
        let started = self.now_ms();
        let Request { method, path, query, headers, mut body, origin } = req;
        let request_id = request_id(&headers);
        self.admitted.set(self.config.auth.is_none());
        let mut error = None;
        let cors = self.config.cors_origins.allowed(&headers);
        let dispatched = match (method, cors) {
            (Method::Options, Some(_)) if cors::preflight_path(&path) => Ok(CorsOrigins::preflight()),
            _ => self.dispatch(method, &path, &query, &headers, &origin, &mut body).await,
        };
        let response = match dispatched {
            Ok(r) => r,
            Err(e) => {
                // Not for strangers: a client that access control has not admitted (refused by
                // it, or before it) must not make wharf read megabytes it will throw away.
                if self.admitted.get() && !matches!(e.code, ErrorCode::Unauthorized | ErrorCode::Denied) {
                    drain(&mut body).await;
                }
                error = Some(e.code.code());
                if self.config.ui && crate::ops::ui::is_ui_path(&path) {
                    crate::ops::ui::error_page(e)
                } else {
                    e.into()
                }
            }
        };
        // Distribution sends the API version on every response; clients use it to detect a
        // registry behind a proxy.
        let response = response
            .header("Docker-Distribution-API-Version", "registry/2.0")
            .header("X-Request-Id", request_id.clone())
            .without_content_coding(method == Method::Head);
        let response = match cors {
            Some(origin) => CorsOrigins::decorate(response, origin),
            None => response,
        };
        // The benchmark's count of storage operations per request (self-test builds only).
        #[cfg(feature = "selftest")]
        let response = match self.config.selftest {
            true => {
                response.header("X-Wharf-Operations", (self.objects.operations() + self.kv.operations()).to_string())
            }
            false => response,
        };
        let actor = self.actor.take();
        if self.config.notify.is_some() {
            let record = RequestRecord {
                id: request_id.clone(),
                host: origin,
                method: method.as_str().to_owned(),
                useragent: headers.get("user-agent").unwrap_or_default().to_owned(),
            };
            if let Some(body) = self.take_events(&record, actor.as_deref()) {
                self.defer(Background::Notify { body });
            }
        }
        // Built only when it will be written: a pull at the default level pays nothing for it.
        let level = if response.status >= 500 { crate::base::log::Level::Error } else { crate::base::log::Level::Info };
        if crate::base::log::enabled(level) {
            let (route, repository) = describe(&path);
            let bytes = match (method, &response.body) {
                (Method::Head, _) | (_, Body::Empty) => 0,
                (_, Body::Bytes(b)) => b.len() as u64,
                (_, Body::Stream(_)) => response.get_header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0),
            };
            crate::base::log::request(crate::base::log::RequestLine {
                level: level.as_str(),
                request_id: &request_id,
                method: method.as_str(),
                route,
                repository: repository.as_ref().map(RepositoryName::as_str),
                status: response.status,
                bytes,
                duration_ms: self.now_ms().saturating_sub(started),
                error,
                user_agent: headers.get("user-agent"),
            });
        }
        response
    }

    async fn dispatch<B: BodyReader<Raw = O::Upload>>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        h: &Headers,
        origin: &str,
        body: &mut B,
    ) -> Result<Response<O::Body>> {
        #[cfg(feature = "selftest")]
        if self.config.selftest
            && let Some(response) = Box::pin(self.selftest(method, path, query, h, body)).await
        {
            return response;
        }
        if let Some(token) = &self.config.admin_token
            && let Some(run) = path.strip_prefix(ADMIN_GC_PATH).filter(|r| r.is_empty() || r.starts_with('/'))
        {
            // Boxed, as the UI below: the state of these rare requests does not belong in the
            // future of every pull.
            return Box::pin(self.admin_gc(token, method, run.trim_start_matches('/'), query, h)).await;
        }
        if self.config.ui {
            if path == "/" && method == Method::Get {
                return Ok(Response::new(302).header("Location", "/ui/").header("Content-Length", "0"));
            }
            if crate::ops::ui::is_ui_path(path) {
                let page = Box::pin(self.ui(method, path, query, h, origin)).await?;
                return Ok(if method == Method::Head { page.body(Body::Empty) } else { page });
            }
        }
        if let (Some(auth), TOKEN_PATH, Method::Get) = (&self.config.auth, path, method) {
            return self.issue_token(auth, query, h).await;
        }
        let route = Route::parse(path)?;
        if self.config.read_only && method.writes() {
            return Err(RegistryError::new(ErrorCode::Unsupported).with_message("the registry is read-only"));
        }
        if let Some(up) = &self.config.upstream
            && method.writes()
        {
            return Err(crate::oci::proxy::writes_refused(up));
        }
        let identity = match &self.config.auth {
            None => None,
            Some(auth) => {
                let identity = self.identify(auth, h).await.map_err(|e| auth.challenge(e, origin, None))?;
                authorize(auth, &identity, &route, method, origin)?;
                *self.actor.borrow_mut() = identity.user().map(str::to_owned);
                Some(identity)
            }
        };
        self.admitted.set(true);
        // What the caller may do to another repository (catalog entries, mount sources).
        let may_pull = |repo: &RepositoryName| match (&self.config.auth, &identity) {
            (Some(auth), Some(id)) => auth.permitted(id, repo.as_str()).contains(Actions::PULL),
            _ => true,
        };
        let param = |key: &str| query_param(query, key);
        use Method::*;
        match (route, method) {
            (Route::Base, Get | Head) => Ok(json_response(b"{}".to_vec(), method == Head)),
            (Route::Manifest(n, r), Get | Head) => self.get_manifest(&n, &r, h, method == Head).await,
            (Route::Manifest(n, r), Put) => {
                let extra_tags = query.iter().filter(|(k, _)| k == "tag").map(|(_, v)| Tag::parse(v));
                let extra_tags = extra_tags.collect::<Result<Vec<_>>>()?;
                let classes = token_classes(identity.as_ref(), &n);
                self.put_manifest(&n, &r, &extra_tags, &classes, h, body).await
            }
            (Route::Manifest(n, r), Delete) => self.delete_manifest(&n, &r).await,
            // A reference that is neither a tag nor a digest names no manifest: GET, HEAD and
            // (deletes enabled) DELETE answer 404 as Distribution does (spec conformance: 404
            // for `.INVALID_MANIFEST_NAME`); a PUT is told what is wrong with it.
            (Route::InvalidManifest(_, reference, _), Get | Head) => Err(invalid_reference(&reference)),
            (Route::InvalidManifest(_, _, e), Put) => Err(e),
            (Route::InvalidManifest(_, reference, _), Delete) => match self.config.delete_enabled {
                true => Err(invalid_reference(&reference)),
                false => Err(crate::oci::manifests::deletes_disabled()),
            },
            (Route::Blob(n, d), Get | Head) => self.get_blob(&n, &d, h, method == Head).await,
            (Route::Blob(n, d), Delete) => self.delete_blob(&n, &d).await,
            (Route::UploadStart(n), Post) => {
                let mut params = StartUpload { digest: param("digest"), mount: param("mount"), from: param("from") };
                // A mount needs the right to pull its source; without it, or with access control
                // and no named source, the client uploads instead (spec: fall back to a session).
                let source_ok = match params.from.map(RepositoryName::parse) {
                    Some(Ok(from)) => may_pull(&from),
                    Some(Err(_)) => true,
                    None => self.config.auth.is_none(),
                };
                if !source_ok {
                    params.mount = None;
                }
                self.start_upload(&n, &params, h, body).await
            }
            (Route::Upload(n, id), Get) => self.upload_status(&n, &id).await,
            (Route::Upload(n, id), Patch) => self.patch_upload(&n, &id, h, body).await,
            (Route::Upload(n, id), Put) => self.finish_upload(&n, &id, param("digest"), h, body).await,
            (Route::Upload(n, id), Delete) => self.cancel_upload(&n, &id).await,
            (Route::TagsList(n), Get) => self.list_tags(&n, query).await,
            (Route::Catalog, Get) => self.catalog(query, &may_pull).await,
            (Route::Referrers(n, d), Get) => self.list_referrers(&n, &d, query).await,
            _ => Err(RegistryError::new(ErrorCode::Unsupported).with_message("method not allowed on this endpoint")),
        }
    }

    /// Runs the work left for after the response. Failures are logged: the client has its
    /// answer, and a blob or tag not stored is simply fetched again next time.
    pub async fn run_background(&self) {
        loop {
            let Some(task) = self.background.borrow_mut().pop() else { return };
            let result = match task {
                Background::Blob { name, digest, length, body, flight } => {
                    let stored = self.store_pulled_blob(&name, &digest, length, body).await.map(drop);
                    drop(flight);
                    stored
                }
                Background::Tag { name, tag, record } => self.cache_tag(&name, &tag, &record).await,
                Background::Notify { body } => {
                    self.deliver(body).await;
                    Ok(())
                }
            };
            if let Err(e) = result {
                crate::base::log::error(&format!("pull-through cache: storing failed: {}", e.message()));
            }
        }
    }
}

/// 404 MANIFEST_UNKNOWN for a manifest reference that is neither a tag nor a digest.
fn invalid_reference(reference: &str) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestUnknown)
        .with_detail(json!({ "reference": reference, "reason": "neither a valid tag nor a digest" }))
}

/// Cloudflare's ray id names the request where there is one (the edge sets it; a value of
/// another shape is not trusted), else a random id.
fn request_id(h: &Headers) -> String {
    match h.get("cf-ray") {
        Some(ray) if (1..=64).contains(&ray.len()) && ray.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            ray.to_owned()
        }
        _ => {
            let mut bytes = [0u8; 8];
            // Without randomness the id is only less unique, never wrong.
            let _ = getrandom::fill(&mut bytes);
            hex::encode(bytes)
        }
    }
}

/// The kind of route and its repository, for the request's log line.
fn describe(path: &str) -> (&'static str, Option<RepositoryName>) {
    match path {
        TOKEN_PATH => ("token", None),
        p if p.starts_with("/_wharf/") => ("admin", None),
        p if crate::ops::ui::is_ui_path(p) => ("ui", None),
        _ => match Route::parse(path) {
            Ok(route) => (route.kind(), route.repository().cloned()),
            Err(_) => ("other", None),
        },
    }
}

/// The access a request needs: nothing more than an identity for `/v2/` (so that clients learn
/// where to authenticate), none for the catalog (filtered instead), else an action on the
/// repository of the URL.
fn authorize(auth: &AuthConfig, identity: &Identity, route: &Route, method: Method, origin: &str) -> Result<()> {
    let (name, needed) = match route {
        Route::Base if *identity == Identity::Anonymous => {
            return Err(auth.challenge(RegistryError::new(ErrorCode::Unauthorized), origin, None));
        }
        Route::Base | Route::Catalog => return Ok(()),
        Route::Manifest(n, _)
        | Route::InvalidManifest(n, ..)
        | Route::Blob(n, _)
        | Route::TagsList(n)
        | Route::Referrers(n, _) => (n, method),
        Route::UploadStart(n) | Route::Upload(n, _) => (n, Method::Post),
    };
    let needed = match needed {
        Method::Get | Method::Head => Actions::PULL,
        Method::Delete => Actions::DELETE,
        _ => Actions::PUSH,
    };
    auth.authorize(identity, name.as_str(), needed, origin)
}

/// The resource classes a token grants on `repository` (empty without a token naming it).
fn token_classes(identity: Option<&Identity>, repository: &RepositoryName) -> Vec<String> {
    let Some(Identity::Token(claims)) = identity else { return Vec::new() };
    claims
        .access
        .iter()
        .filter(|a| a.name == repository.as_str())
        .filter_map(|a| a.repository_class().map(|c| c.unwrap_or("image").to_owned()))
        .collect()
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

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// `GET /token?service=&scope=...` with Basic credentials or none: a token for what the
    /// rules allow of the requested scopes. Wrong credentials are 401, never anonymous.
    async fn issue_token(
        &self,
        auth: &AuthConfig,
        query: &[(String, String)],
        h: &Headers,
    ) -> Result<Response<O::Body>> {
        let identity = self.identify(auth, h).await?;
        let scopes: Vec<&str> = query.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()).collect();
        let token = auth.issue_token(&identity, &scopes, self.now_secs())?;
        let body = serde_json::to_vec(&token).map_err(RegistryError::internal)?;
        // Tokens are per caller: no cache may keep one.
        Ok(json_response(body, false).header("Cache-Control", "no-store"))
    }
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// The garbage collection endpoints, authenticated by `Authorization: Bearer
    /// <WHARF_ADMIN_TOKEN>` alone:
    /// - `POST /_wharf/gc?dry-run=`: starts a run and answers its state, with its id: 202 while
    ///   its steps go on in the queue, 200 once done (without a queue the run ends here). It only
    ///   reports unless `dry-run=false`, which needs `WHARF_GC=on` (then writers check for it,
    ///   see `gc`). While a run goes on, no other starts: the answer is the running one.
    /// - `GET /_wharf/gc`, `GET /_wharf/gc/<id>`: the state of the last run (of that run), with
    ///   its report.
    async fn admin_gc(
        &self,
        token: &str,
        method: Method,
        run: &str,
        query: &[(String, String)],
        h: &Headers,
    ) -> Result<Response<O::Body>> {
        let given = h.get("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
        if !crate::auth::secret::constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            return Err(RegistryError::new(ErrorCode::Unauthorized)
                .with_message("the admin token is needed")
                .with_header("WWW-Authenticate", "Bearer realm=\"wharf admin\""));
        }
        let state = match (method, run) {
            (Method::Post, "") => {
                let dry_run = !matches!(query_param(query, "dry-run"), Some("false" | "0"));
                if !dry_run && self.config.gc != GcMode::On {
                    return Err(RegistryError::new(ErrorCode::Unsupported)
                        .with_message("garbage collection deletes only with WHARF_GC=on; dry runs are allowed"));
                }
                let now = self.now_ms();
                let (state, new) = self.start_gc(now, dry_run).await?;
                match new || state.stalled(now) {
                    true => self.drive_gc(state).await?,
                    false => state,
                }
            }
            (Method::Get | Method::Head, _) => match self.gc_run().await? {
                Some(state) if run.is_empty() || state.id == run => state,
                _ => {
                    return Err(RegistryError::new(ErrorCode::RouteUnknown)
                        .with_message("no such garbage collection run")
                        .with_detail(run.to_owned()));
                }
            },
            _ => {
                return Err(RegistryError::new(ErrorCode::Unsupported)
                    .with_message("POST /_wharf/gc starts a garbage collection; GET reads it"));
            }
        };
        let body = serde_json::to_vec(&state).map_err(RegistryError::internal)?;
        let status = if state.done() { 200 } else { 202 };
        let mut response = json_response(body, method == Method::Head)
            .header("Cache-Control", "no-store")
            .header("Location", format!("{ADMIN_GC_PATH}/{}", state.id));
        response.status = status;
        Ok(response)
    }
}
