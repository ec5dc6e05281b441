//! The registry: its storage, its settings, what the host supplies, the isolate's memo, and the
//! state of the request being answered. Every resource's handlers are methods of [`Registry`]
//! in their own module (see `oci`, `ops`); the dispatch to them is in `dispatch`.

pub mod events;
pub mod host;

use crate::auth::{AuthConfig, Identified, Identity, PasswordCheck};
use crate::base::error::{ErrorCode, RegistryError, body_error};
use crate::base::http::{Body, BodyReader, Headers, Response};
use crate::base::names::{Digest, RepositoryName, Tag};
use crate::config::Config;
use crate::config::notify::Action;
use crate::storage::keys::TagRecord;
use crate::storage::memo::{FlightGuard, Memo};
use crate::storage::retry::{Retrying, Sleep};
use crate::storage::{KeyValueStore, ObjectStore};
use events::Target;
use host::{Notifier, PasswordDerivation, SignatureCheck, StepQueue, Upstream};
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
