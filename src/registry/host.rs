//! What the host (the Worker) supplies to the registry: the clients and the crypto that wasm
//! does not have or does slowly.

use crate::base::http::{Headers, Method};
use crate::storage::ObjectStore;
use futures_util::future::LocalBoxFuture;

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

/// A request to the upstream (or its token realm, or a redirect target).
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
}

/// The upstream's answer, its body unread.
pub struct UpstreamResponse<B> {
    pub status: u16,
    pub headers: Headers,
    pub body: Option<B>,
}

/// The host's HTTP client and stream plumbing, as the cache needs them. Bodies are of the
/// store's upload type, so that one can be handed to R2 as it arrives.
pub trait Upstream<O: ObjectStore> {
    /// Sends one request. Redirects are returned, not followed.
    fn fetch(
        &self,
        request: UpstreamRequest,
    ) -> LocalBoxFuture<'_, std::result::Result<UpstreamResponse<O::Upload>, String>>;
    /// Reads a body whole; more than `limit` bytes is an error.
    fn read(&self, body: O::Upload, limit: usize) -> LocalBoxFuture<'_, std::result::Result<Vec<u8>, String>>;
    /// Splits a body of `length` bytes into one for the client and one to store.
    fn tee(&self, body: O::Upload, length: u64) -> std::result::Result<(O::Body, O::Upload), String>;
    /// The body as a response body, not stored.
    fn pass(&self, body: O::Upload) -> O::Body;
}

/// One notification envelope for one endpoint: a queue message (see `ops::notify`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub endpoint: String,
    /// The envelope, as sent.
    pub envelope: String,
}

/// The host's means of sending notifications.
pub trait Notifier {
    /// POSTs `body`; the response status, or why nothing came back.
    fn post(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> LocalBoxFuture<'_, Result<u16, String>>;
    /// Waits before a retry.
    fn sleep(&self, ms: u64) -> LocalBoxFuture<'_, ()>;
    /// Hands deliveries to a durable queue, whose consumer sends them
    /// (`Registry::deliver_queued`); `None` when the host has no queue, and they are sent at once.
    fn enqueue(&self, _deliveries: Vec<Delivery>) -> Option<LocalBoxFuture<'_, Result<(), String>>> {
        None
    }
}

/// The host's queue of garbage collection steps (a Cloudflare Queue, bound as `GC`): a message
/// names a run, and its consumer runs that run's next step (`Registry::gc_step`).
pub trait StepQueue {
    fn send(&self, run: &str) -> LocalBoxFuture<'_, Result<(), String>>;
}
