//! The registry: storage, configuration and the dispatch from routes to the handlers of each
//! resource (manifests, blobs, uploads, tags). Handlers return typed errors; this is the one
//! place they become HTTP responses.

use crate::auth::access::Actions;
use crate::auth::{AuthConfig, Identified, Identity, PasswordCheck};
use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::{Body, BodyReader, Headers, Method, Request, Response, query_param};
use crate::base::names::{RepositoryName, Tag};
use crate::base::router::Route;
use crate::config::{Config, GcMode};
use crate::oci::proxy::{Background, Upstream};
use crate::oci::uploads::StartUpload;
use crate::ops::notify::{Action, Notifier, RequestRecord, Target};
use crate::storage::memo::Memo;
use crate::storage::{KeyValueStore, ObjectStore};
use futures_util::future::LocalBoxFuture;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;

pub type Result<T> = std::result::Result<T, RegistryError>;

/// Path of the token endpoint (the realm of challenges), outside `/v2/`.
pub const TOKEN_PATH: &str = "/token";

/// The admin endpoint that runs a garbage collection (with `WHARF_ADMIN_TOKEN`).
pub const ADMIN_GC_PATH: &str = "/_wharf/gc";

/// Checks a signature with an external issuer's key: (alg, JWK, signed bytes, signature) ->
/// whether it holds. The Worker uses WebCrypto; nothing in the wasm does public-key crypto.
pub type SignatureCheck = Box<
    dyn Fn(String, serde_json::Value, Vec<u8>, Vec<u8>) -> LocalBoxFuture<'static, std::result::Result<bool, String>>,
>;

/// Derives PBKDF2-HMAC-SHA256 of (password, salt, iterations), 32 bytes: the Worker's
/// WebCrypto, far faster than the same in wasm. An error (an iteration count the host does not
/// take) falls back to wasm.
pub type PasswordDerivation =
    Box<dyn Fn(Vec<u8>, Vec<u8>, u32) -> LocalBoxFuture<'static, std::result::Result<Vec<u8>, String>>>;

pub struct Registry<O: ObjectStore, K> {
    pub objects: O,
    pub kv: K,
    /// Shared: the Worker parses its variables once per isolate, not per request.
    pub config: Rc<Config>,
    /// Milliseconds since the Unix epoch; the host supplies it, since wasm has no clock of its
    /// own.
    pub clock: Box<dyn Fn() -> u64>,
    /// The host's signature check for external tokens; without one they are refused.
    pub signature_check: Option<SignatureCheck>,
    /// The host's password derivation; without one, passwords are derived in wasm.
    pub password_derivation: Option<PasswordDerivation>,
    /// The host's HTTP client for the upstream of a pull-through cache.
    pub upstream: Option<Box<dyn Upstream<O>>>,
    /// Work for after the response ([`Registry::run_background`]).
    pub(crate) background: RefCell<Vec<Background<O::Upload>>>,
    /// The isolate's memory of hot tags and manifests (see `memo`).
    pub(crate) memo: Rc<Memo>,
    /// The host's HTTP client for notifications.
    pub notifier: Option<Box<dyn Notifier>>,
    /// Events of the request being answered, and who made it (see `notify`).
    pub(crate) events: RefCell<Vec<(Action, Target)>>,
    actor: RefCell<Option<String>>,
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    pub fn new(objects: O, kv: K, config: impl Into<Rc<Config>>, clock: Box<dyn Fn() -> u64>) -> Self {
        let config = config.into();
        let memo = Rc::new(Memo::new(config.tag_memo_secs));
        Self {
            objects,
            kv,
            config,
            clock,
            signature_check: None,
            password_derivation: None,
            upstream: None,
            background: RefCell::default(),
            memo,
            notifier: None,
            events: RefCell::default(),
            actor: RefCell::default(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Seconds since the Unix epoch (token lifetimes, memo ages).
    pub fn now_secs(&self) -> u64 {
        (self.clock)() / 1000
    }

    /// Shares a memo across registries: the Worker keeps one per isolate.
    pub fn with_memo(mut self, memo: Rc<Memo>) -> Self {
        self.memo = memo;
        self
    }

    pub fn with_signature_check(mut self, check: SignatureCheck) -> Self {
        self.signature_check = Some(check);
        self
    }

    pub fn with_password_derivation(mut self, derivation: PasswordDerivation) -> Self {
        self.password_derivation = Some(derivation);
        self
    }

    pub fn with_notifier(mut self, notifier: Box<dyn Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn with_upstream(mut self, upstream: Box<dyn Upstream<O>>) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Who is asking, with an external token's signature checked by the host.
    pub(crate) async fn identify(&self, auth: &AuthConfig, h: &Headers) -> Result<Identity> {
        let now = self.now_secs();
        match auth.identify(h, now)? {
            Identified::Ready(identity) => Ok(identity),
            Identified::Password(check) => {
                // A client sending Basic on every request pays the derivation once a minute.
                let credential = self.memo.credential(&check.user, &check.password, &check.hash.to_string());
                if credential.is_some_and(|c| self.memo.verified(&c, now)) {
                    return Ok(Identity::User(check.user));
                }
                let derived = self.derive_password(&check).await;
                let identity = auth.finish_password(check, &derived)?;
                if let Some(credential) = credential {
                    self.memo.remember_verified(credential, now);
                }
                Ok(identity)
            }
            Identified::External(check) => {
                let holds = match &self.signature_check {
                    Some(verify) => {
                        let (alg, jwk) = (check.alg.clone(), check.jwk.clone());
                        verify(alg, jwk, check.signing_input.clone(), check.signature.clone()).await.unwrap_or_else(
                            |e| {
                                crate::base::log::error(&format!("signature check failed: {e}"));
                                false
                            },
                        )
                    }
                    None => false,
                };
                auth.finish_external(check, holds, now)
            }
        }
    }

    /// PBKDF2 of a password check's password with its hash's salt and iterations: the host's
    /// derivation, or wasm's when there is none or it refuses the count.
    async fn derive_password(&self, check: &PasswordCheck) -> Vec<u8> {
        let (password, salt, iterations) = (check.password.as_bytes(), check.hash.salt(), check.hash.iterations());
        if let Some(derive) = &self.password_derivation
            && let Ok(derived) = derive(password.to_vec(), salt.to_vec(), iterations).await
        {
            return derived;
        }
        crate::auth::secret::derive(password, salt, iterations).to_vec()
    }

    /// Answers one request. Never fails: every error becomes an OCI error response. Logs one
    /// line (see `log`) and names the request in `X-Request-Id`.
    pub async fn handle<B: BodyReader<Raw = O::Upload>>(&self, req: Request<B>) -> Response<O::Body> {
        let started = self.now_ms();
        let Request { method, path, query, headers, mut body, origin } = req;
        let request_id = request_id(&headers);
        let mut error = None;
        let response = match self.dispatch(method, &path, &query, &headers, &origin, &mut body).await {
            Ok(r) => r,
            Err(e) => {
                // Not for strangers: an unauthenticated client must not make wharf read
                // megabytes it will throw away.
                if !matches!(e.code, ErrorCode::Unauthorized | ErrorCode::Denied) {
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
            .header("X-Request-Id", request_id.clone());
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
        if let (Some(token), ADMIN_GC_PATH) = (&self.config.admin_token, path) {
            // Boxed, as the UI below: the state of these rare requests does not belong in the
            // future of every pull.
            return Box::pin(self.admin_gc(token, method, query, h)).await;
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
            return Err(RegistryError::new(ErrorCode::PayloadTooLarge).with_detail(json!({ "limit": limit })));
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

/// The client's request body broke off mid-way, or ended before its announced length. Logged:
/// the client may no longer be there to read the answer.
pub fn body_error(e: String) -> RegistryError {
    crate::base::log::error(&format!("the request body broke off: {e}"));
    RegistryError::new(ErrorCode::BlobUploadInvalid).with_message("the request body could not be read").with_detail(e)
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
    /// `POST /_wharf/gc?dry-run=`: runs a garbage collection and answers its report. It only
    /// reports unless `dry-run=false`, which needs `WHARF_GC=on` (then writers check for it,
    /// see `gc`). Authenticated by `Authorization: Bearer <WHARF_ADMIN_TOKEN>` alone.
    async fn admin_gc(
        &self,
        token: &str,
        method: Method,
        query: &[(String, String)],
        h: &Headers,
    ) -> Result<Response<O::Body>> {
        let given = h.get("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
        if !crate::auth::secret::constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            return Err(RegistryError::new(ErrorCode::Unauthorized)
                .with_message("the admin token is needed")
                .with_header("WWW-Authenticate", "Bearer realm=\"wharf admin\""));
        }
        if method != Method::Post {
            return Err(RegistryError::new(ErrorCode::Unsupported).with_message("POST runs a garbage collection"));
        }
        let dry_run = !matches!(query_param(query, "dry-run"), Some("false" | "0"));
        if !dry_run && self.config.gc != GcMode::On {
            return Err(RegistryError::new(ErrorCode::Unsupported)
                .with_message("garbage collection deletes only with WHARF_GC=on; dry runs are allowed"));
        }
        let report = self.collect_garbage(self.now_ms(), dry_run).await?;
        let body = serde_json::to_vec(&report).map_err(RegistryError::internal)?;
        Ok(json_response(body, false).header("Cache-Control", "no-store"))
    }
}
