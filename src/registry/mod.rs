//! The registry: its storage, its settings, what the host supplies, the isolate's memo, and the
//! state of the request being answered. Every resource's handlers are methods of [`Registry`]
//! in their own module (see `oci`, `ops`); the dispatch to them is in `dispatch`.

pub mod events;
pub mod host;

use crate::auth::oidc::{Discovery, OidcIssuer};
use crate::auth::token::{parse_jwks, pick_key};
use crate::auth::{AuthConfig, Identified, Identity, PasswordCheck};
use crate::base::error::{ErrorCode, RegistryError, body_error};
use crate::base::http::{Body, BodyReader, Headers, Method, Response};
use crate::base::names::{Digest, RepositoryName, Tag};
use crate::config::Config;
use crate::config::notify::Action;
use crate::storage::keys::TagRecord;
use crate::storage::memo::{FlightGuard, Memo};
use crate::storage::retry::{Retrying, Sleep};
use crate::storage::{KeyValueStore, ObjectStore};
use events::Target;
use host::{Notifier, PasswordDerivation, SignatureCheck, StepQueue, Upstream, UpstreamRequest};
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

pub type Result<T> = std::result::Result<T, RegistryError>;

pub struct Registry<O: ObjectStore, K> {
    /// R2 and KV, with writes refused for load tried again (see `retry`).
    pub objects: Retrying<O>,
    pub kv: Retrying<K>,
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
    /// The host's HTTP client for OIDC discovery (see [`Registry::with_oidc_discovery`]).
    pub oidc_discovery: Option<Box<dyn Upstream<O>>>,
    /// Work for after the response ([`Registry::run_background`]).
    pub(crate) background: RefCell<Vec<Background<O::Upload>>>,
    /// The isolate's memory of hot tags and manifests (see `memo`).
    pub(crate) memo: Rc<Memo>,
    /// The host's HTTP client for notifications.
    pub notifier: Option<Box<dyn Notifier>>,
    /// The host's queue of garbage collection steps; without one a run goes on to its end in
    /// the invocation that started it.
    pub gc_steps: Option<Box<dyn StepQueue>>,
    /// Events of the request being answered, and who made it (see `notify`).
    pub(crate) events: RefCell<Vec<(Action, Target)>>,
    pub(crate) actor: RefCell<Option<String>>,
    /// Whether the request being answered got past access control (or there is none).
    pub(crate) admitted: Cell<bool>,
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    pub fn new(objects: O, kv: K, config: impl Into<Rc<Config>>, clock: Box<dyn Fn() -> u64>) -> Self {
        let config = config.into();
        let memo = Rc::new(Memo::new(config.tag_memo_secs));
        Self {
            objects: Retrying::new(objects),
            kv: Retrying::new(kv),
            config,
            clock,
            signature_check: None,
            password_derivation: None,
            upstream: None,
            oidc_discovery: None,
            background: RefCell::default(),
            memo,
            notifier: None,
            gc_steps: None,
            events: RefCell::default(),
            actor: RefCell::default(),
            admitted: Cell::new(false),
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

    /// The host's timer: with one, writes refused for load are tried again (see `retry`).
    pub fn with_sleep(mut self, sleep: Sleep) -> Self {
        self.objects.sleep = Some(sleep.clone());
        self.kv.sleep = Some(sleep);
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

    pub fn with_gc_steps(mut self, queue: Box<dyn StepQueue>) -> Self {
        self.gc_steps = Some(queue);
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

    /// The host's HTTP client for OIDC issuers' discovery documents and keys.
    pub fn with_oidc_discovery(mut self, http: Box<dyn Upstream<O>>) -> Self {
        self.oidc_discovery = Some(http);
        self
    }

    /// The key of an OIDC issuer for a token's `alg` and `kid`: from its configuration, else from
    /// its discovery document, kept by the isolate and fetched again for a `kid` it lacks, at
    /// most once a minute (tokens naming unknown keys cannot make wharf fetch more often).
    async fn oidc_key(&self, issuer: &OidcIssuer, alg: &str, kid: Option<&str>, now: u64) -> Option<serde_json::Value> {
        if let Some(keys) = &issuer.keys {
            return pick_key(keys, alg, kid).cloned();
        }
        let cached = self.memo.oidc_keys(&issuer.issuer);
        if let Some((keys, _)) = &cached
            && let Some(key) = pick_key(keys, alg, kid)
        {
            return Some(key.clone());
        }
        if cached.is_some_and(|(_, fetched)| now < fetched + OIDC_REFETCH_SECS) {
            return None;
        }
        match self.discover_keys(&issuer.issuer).await {
            Ok(keys) => {
                let key = pick_key(&keys, alg, kid).cloned();
                self.memo.remember_oidc_keys(&issuer.issuer, keys, now);
                key
            }
            Err(e) => {
                crate::base::log::error(&format!("oidc: the keys of {} could not be read: {e}", issuer.issuer));
                None
            }
        }
    }

    /// An issuer's keys: its discovery document (OpenID Connect Discovery 1.0 §4), then the
    /// JWK set at its `jwks_uri`.
    async fn discover_keys(&self, issuer: &str) -> std::result::Result<Vec<serde_json::Value>, String> {
        let http = self.oidc_discovery.as_ref().ok_or("no HTTP client")?;
        let get = async |url: String| {
            let request = UpstreamRequest {
                method: Method::Get,
                url: url.clone(),
                headers: vec![("Accept", "application/json".into())],
            };
            let response = http.fetch(request).await?;
            let body = response.body.ok_or_else(|| format!("{url}: no body"))?;
            let bytes = http.read(body, OIDC_DOCUMENT_LIMIT).await?;
            match response.status {
                200 => Ok(bytes),
                status => Err(format!("{url}: {status}")),
            }
        };
        let discovery = get(format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))).await?;
        let discovery: Discovery =
            serde_json::from_slice(&discovery).map_err(|e| format!("discovery document: {e}"))?;
        let jwks = get(discovery.jwks_uri).await?;
        parse_jwks(&jwks, "jwks_uri")
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
                let (alg, jwk) = (check.alg.clone(), check.jwk.clone());
                let holds = self.signature_holds(alg, jwk, check.signing_input.clone(), check.signature.clone()).await;
                auth.finish_external(check, holds, now)
            }
            Identified::Oidc(token) => {
                let issuer = auth.oidc.of(&token).cloned();
                let key = match issuer {
                    Some(issuer) => self.oidc_key(&issuer, &token.alg, token.kid.as_deref(), now).await,
                    None => None,
                };
                let holds = match key {
                    Some(jwk) => {
                        let (alg, input, signature) =
                            (token.alg.clone(), token.signing_input.clone(), token.signature.clone());
                        self.signature_holds(alg, jwk, input, signature).await
                    }
                    None => false,
                };
                auth.finish_oidc(token, holds, now)
            }
        }
    }

    /// The host's check of a signature; `false` without one, or when it fails.
    async fn signature_holds(&self, alg: String, jwk: serde_json::Value, input: Vec<u8>, signature: Vec<u8>) -> bool {
        let Some(verify) = &self.signature_check else { return false };
        verify(alg, jwk, input, signature).await.unwrap_or_else(|e| {
            crate::base::log::error(&format!("signature check failed: {e}"));
            false
        })
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
}

/// How long an OIDC issuer's keys are kept before a token naming an unknown key may have them
/// fetched again.
const OIDC_REFETCH_SECS: u64 = 60;
/// Largest discovery document or JWK set read.
const OIDC_DOCUMENT_LIMIT: usize = 256 * 1024;

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

/// Work done after the response is sent (the Worker's `waitUntil`).
pub(crate) enum Background<U> {
    /// Store a blob streaming from the upstream, verified against its digest, and link it;
    /// the isolate's fetch of it (`flight`) ends once that is done.
    Blob { name: RepositoryName, digest: Digest, length: u64, body: U, flight: Option<FlightGuard> },
    /// Point a tag at a manifest the upstream confirmed, noting when.
    Tag { name: RepositoryName, tag: Tag, record: TagRecord },
    /// Send a notification envelope (see `notify`).
    Notify { body: Vec<u8> },
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    pub(crate) fn defer(&self, task: Background<O::Upload>) {
        self.background.borrow_mut().push(task);
    }

    /// Whether work is left for after the response.
    pub fn has_background(&self) -> bool {
        !self.background.borrow().is_empty()
    }

    /// Notes an event of the request being answered, if notifications want it.
    pub(crate) fn record_event(&self, action: Action, target: Target) {
        if self.config.notify.as_ref().is_some_and(|n| n.actions.contains(&action)) {
            self.events.borrow_mut().push((action, target));
        }
    }
}
