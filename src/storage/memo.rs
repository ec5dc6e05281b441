//! Isolate memory in front of KV and R2 for the hottest reads of a pull: what a tag points at,
//! and manifests by digest. One isolate serves many requests, so a repeated pull by tag costs
//! no storage round trip at all.
//!
//! - **Tags** are kept `WHARF_TAG_MEMO_SECONDS` (default 2; 0 turns this off). Writes and
//!   deletes through this isolate update the memo at once. Another isolate's move of a tag is
//!   seen here within that time, on top of KV's own propagation (up to a minute between
//!   locations).
//! - **Manifests by digest, and where a repository's blob is** (its link) never change; they
//!   are kept up to [`CONTENT_SECONDS`], so that what is deleted through another isolate stops
//!   being served here within that bound. A delete through this isolate forgets it at once.
//!
//! - **Verified Basic credentials** are kept [`CREDENTIAL_SECONDS`], so that a client that sends
//!   Basic on every request pays the password derivation once. They are keyed by an HMAC of
//!   user, password and stored hash under a key drawn when the isolate starts: the memo never
//!   holds a password, and a changed password misses.
//!
//! All are bounded (entries and bytes) and forget the oldest first.
//!
//! A read that raced a write must not put the old value back: every write and delete moves
//! the memo's generation on, and a value read from storage is only remembered when the
//! generation is still the one taken before the read ([`Memo::generation`]). Deletes forget
//! before and after they reach storage, so that a read overlapping the delete is dropped too.

use crate::base::media::MediaType;
use crate::storage::keys::TagRecord;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::hash::Hash;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// How long a manifest by digest or a blob link is kept.
pub const CONTENT_SECONDS: u64 = 60;
/// How long verified credentials are kept.
pub const CREDENTIAL_SECONDS: u64 = 60;
/// Most verified credentials kept.
const MAX_CREDENTIALS: usize = 1024;
/// Most blob links kept.
const MAX_LINKS: usize = 16384;
/// Most tags kept.
const MAX_TAGS: usize = 4096;
/// Most bytes of manifests kept, and the largest one kept.
const MAX_MANIFEST_BYTES: usize = 8 * 1024 * 1024;
const MAX_MANIFEST_SIZE: usize = 256 * 1024;

/// A manifest as served: its type and bytes.
#[derive(Debug, Clone)]
pub struct MemoManifest {
    pub media_type: MediaType,
    pub bytes: Rc<Vec<u8>>,
}

/// An OIDC issuer's JWKs as fetched, and when (seconds since the epoch).
pub type FetchedKeys = (Rc<Vec<serde_json::Value>>, u64);

/// A map bounded in entries and in total weight, forgetting the oldest entries first, whose
/// entries expire.
struct Bounded<K, V> {
    entries: HashMap<K, (V, u64, usize)>,
    order: VecDeque<K>,
    weight: usize,
    max_entries: usize,
    max_weight: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Bounded<K, V> {
    fn new(max_entries: usize, max_weight: usize) -> Self {
        Self { entries: HashMap::new(), order: VecDeque::new(), weight: 0, max_entries, max_weight }
    }

    fn get(&self, key: &K, now: u64) -> Option<V> {
        self.entries.get(key).filter(|(_, expires, _)| now < *expires).map(|(v, _, _)| v.clone())
    }

    fn insert(&mut self, key: K, value: V, expires: u64, weight: usize) {
        self.remove(&key);
        self.order.push_back(key.clone());
        self.entries.insert(key, (value, expires, weight));
        self.weight += weight;
        while self.entries.len() > self.max_entries || self.weight > self.max_weight {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some((_, _, w)) = self.entries.remove(&oldest) {
                self.weight -= w;
            }
        }
    }

    fn remove(&mut self, key: &K) {
        if let Some((_, _, w)) = self.entries.remove(key) {
            self.weight -= w;
            self.order.retain(|k| k != key);
        }
    }
}

/// The memo of one isolate (the Worker keeps one for its lifetime; each native test registry
/// has its own).
pub struct Memo {
    tag_seconds: u64,
    generation: Cell<u64>,
    tags: RefCell<Bounded<(String, String), TagRecord>>,
    manifests: RefCell<Bounded<(String, String), MemoManifest>>,
    /// (repository, digest) -> (object holding the bytes, size).
    links: RefCell<Bounded<(String, String), (String, u64)>>,
    /// HMAC of verified credentials (see [`Memo::credential`]).
    credentials: RefCell<Bounded<[u8; 32], ()>>,
    /// The key of those HMACs; `None` (nothing remembered) when no random key could be drawn.
    credential_key: Option<[u8; 32]>,
    /// Pull-through fetches of blobs in flight (see [`Flights`]).
    pub flights: Flights,
    /// OIDC issuer -> its keys from its discovery document, and when they were fetched (s).
    oidc_keys: RefCell<HashMap<String, FetchedKeys>>,
}

impl Memo {
    pub fn new(tag_seconds: u64) -> Self {
        Self {
            tag_seconds,
            generation: Cell::new(0),
            tags: RefCell::new(Bounded::new(MAX_TAGS, usize::MAX)),
            manifests: RefCell::new(Bounded::new(usize::MAX, MAX_MANIFEST_BYTES)),
            links: RefCell::new(Bounded::new(MAX_LINKS, usize::MAX)),
            flights: Flights::default(),
            oidc_keys: RefCell::default(),
            credentials: RefCell::new(Bounded::new(MAX_CREDENTIALS, usize::MAX)),
            credential_key: {
                let mut key = [0; 32];
                getrandom::fill(&mut key).ok().map(|()| key)
            },
        }
    }

    /// An OIDC issuer's keys as last fetched, and when (seconds).
    pub fn oidc_keys(&self, issuer: &str) -> Option<FetchedKeys> {
        self.oidc_keys.borrow().get(issuer).cloned()
    }

    pub fn remember_oidc_keys(&self, issuer: &str, keys: Vec<serde_json::Value>, now: u64) {
        self.oidc_keys.borrow_mut().insert(issuer.to_owned(), (Rc::new(keys), now));
    }

    /// The generation to pass to a `remember_*` call for a value about to be read from storage.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Whether a value read from storage may be remembered (`Some` of the generation taken
    /// before the read), or the value was just written (`None`: it is the newest, and reads in
    /// flight must not overwrite it).
    fn admit(&self, read_at: Option<u64>) -> bool {
        match read_at {
            Some(g) => g == self.generation.get(),
            None => {
                self.generation.set(self.generation.get() + 1);
                true
            }
        }
    }

    fn invalidate(&self) {
        self.generation.set(self.generation.get() + 1);
    }

    pub fn tag(&self, repository: &str, tag: &str, now: u64) -> Option<TagRecord> {
        self.tags.borrow().get(&(repository.to_owned(), tag.to_owned()), now)
    }

    pub fn remember_tag(&self, repository: &str, tag: &str, record: &TagRecord, now: u64, read_at: Option<u64>) {
        if self.admit(read_at) && self.tag_seconds > 0 {
            self.tags.borrow_mut().insert(
                (repository.to_owned(), tag.to_owned()),
                record.clone(),
                now + self.tag_seconds,
                1,
            );
        }
    }

    pub fn forget_tag(&self, repository: &str, tag: &str) {
        self.invalidate();
        self.tags.borrow_mut().remove(&(repository.to_owned(), tag.to_owned()));
    }

    pub fn manifest(&self, repository: &str, digest: &str, now: u64) -> Option<MemoManifest> {
        self.manifests.borrow().get(&(repository.to_owned(), digest.to_owned()), now)
    }

    pub fn remember_manifest(
        &self,
        repository: &str,
        digest: &str,
        media_type: MediaType,
        bytes: &[u8],
        now: u64,
        read_at: Option<u64>,
    ) {
        if self.admit(read_at) && bytes.len() <= MAX_MANIFEST_SIZE {
            let value = MemoManifest { media_type, bytes: Rc::new(bytes.to_vec()) };
            let key = (repository.to_owned(), digest.to_owned());
            self.manifests.borrow_mut().insert(key, value, now + CONTENT_SECONDS, bytes.len());
        }
    }

    pub fn forget_manifest(&self, repository: &str, digest: &str) {
        self.invalidate();
        self.manifests.borrow_mut().remove(&(repository.to_owned(), digest.to_owned()));
    }

    pub fn link(&self, repository: &str, digest: &str, now: u64) -> Option<(String, u64)> {
        self.links.borrow().get(&(repository.to_owned(), digest.to_owned()), now)
    }

    pub fn remember_link(
        &self,
        repository: &str,
        digest: &str,
        object: &str,
        size: u64,
        now: u64,
        read_at: Option<u64>,
    ) {
        if !self.admit(read_at) {
            return;
        }
        let key = (repository.to_owned(), digest.to_owned());
        self.links.borrow_mut().insert(key, (object.to_owned(), size), now + CONTENT_SECONDS, 1);
    }

    pub fn forget_link(&self, repository: &str, digest: &str) {
        self.invalidate();
        self.links.borrow_mut().remove(&(repository.to_owned(), digest.to_owned()));
    }

    /// The memo's name for credentials checked against `stored` (a password hash's text):
    /// an HMAC-SHA256 of the three, each length-prefixed so that no two triples share it.
    pub fn credential(&self, user: &str, password: &str, stored: &str) -> Option<[u8; 32]> {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.credential_key?).ok()?;
        for part in [user, password, stored] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        Some(mac.finalize().into_bytes().into())
    }

    /// Whether these credentials were verified within [`CREDENTIAL_SECONDS`].
    pub fn verified(&self, credential: &[u8; 32], now: u64) -> bool {
        self.credentials.borrow().get(credential, now).is_some()
    }

    pub fn remember_verified(&self, credential: [u8; 32], now: u64) {
        self.credentials.borrow_mut().insert(credential, (), now + CREDENTIAL_SECONDS, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(d: &str) -> TagRecord {
        TagRecord { digest: d.into(), media_type: String::new(), size: 1, cached_at: None }
    }

    #[test]
    fn tags_expire_and_can_be_forgotten() {
        let memo = Memo::new(2);
        memo.remember_tag("r", "v1", &record("a"), 100, None);
        assert_eq!(memo.tag("r", "v1", 101).map(|r| r.digest), Some("a".into()));
        assert!(memo.tag("r", "v1", 102).is_none(), "expired");
        memo.remember_tag("r", "v1", &record("b"), 102, None);
        memo.forget_tag("r", "v1");
        assert!(memo.tag("r", "v1", 102).is_none());
        let off = Memo::new(0);
        off.remember_tag("r", "v1", &record("a"), 100, None);
        assert!(off.tag("r", "v1", 100).is_none());
    }

    #[test]
    fn a_read_that_raced_a_write_or_delete_is_not_remembered() {
        let memo = Memo::new(2);
        // A read starts, a push writes B and remembers it, the read ends with the old A.
        let read_at = memo.generation();
        memo.remember_tag("r", "v1", &record("B"), 100, None);
        memo.remember_tag("r", "v1", &record("A"), 100, Some(read_at));
        assert_eq!(memo.tag("r", "v1", 100).map(|r| r.digest), Some("B".into()));
        // A read starts during a delete (after its first forget), ends after it.
        memo.forget_manifest("r", "d");
        let read_at = memo.generation();
        memo.forget_manifest("r", "d");
        memo.remember_manifest("r", "d", MediaType::OciManifest, b"{}", 100, Some(read_at));
        assert!(memo.manifest("r", "d", 100).is_none());
        // A read with nothing in between is remembered.
        let read_at = memo.generation();
        memo.remember_link("r", "d", "blobs/x", 1, 100, Some(read_at));
        assert_eq!(memo.link("r", "d", 100), Some(("blobs/x".into(), 1)));
    }

    #[test]
    fn the_oldest_entries_go_first_when_full() {
        let mut m: Bounded<u32, u32> = Bounded::new(2, 10);
        m.insert(1, 1, 100, 1);
        m.insert(2, 2, 100, 1);
        m.insert(3, 3, 100, 1);
        assert_eq!((m.get(&1, 0), m.get(&2, 0), m.get(&3, 0)), (None, Some(2), Some(3)));
        // Over the weight: the oldest go until it fits.
        m.insert(4, 4, 100, 9);
        assert_eq!((m.get(&2, 0), m.get(&3, 0), m.get(&4, 0), m.weight), (None, Some(3), Some(4), 10));
        // Replacing an entry replaces its weight.
        m.insert(4, 5, 100, 1);
        assert_eq!((m.get(&4, 0), m.weight, m.order.len()), (Some(5), 2, 2));
        assert_eq!(m.get(&4, 100), None, "expired");
    }

    #[test]
    fn manifests_are_bounded_in_size() {
        let memo = Memo::new(2);
        memo.remember_manifest("r", "d", MediaType::OciManifest, &vec![0; MAX_MANIFEST_SIZE + 1], 0, None);
        assert!(memo.manifest("r", "d", 0).is_none());
        memo.remember_manifest("r", "d", MediaType::OciManifest, b"{}", 0, None);
        assert_eq!(memo.manifest("r", "d", CONTENT_SECONDS - 1).map(|m| m.bytes.len()), Some(2));
        assert!(memo.manifest("r", "d", CONTENT_SECONDS).is_none());
    }
}

/// A pull-through cache's fetches of blobs from its upstream, in flight in this isolate, by
/// repository and digest. A request for a blob that another request of the isolate is fetching
/// waits for that fetch to be stored, then serves the stored blob: N clients pulling one cold
/// blob at once fetch it upstream once. (Each isolate fetches on its own.)
#[derive(Default)]
pub struct Flights(Rc<RefCell<HashMap<String, Rc<Flight>>>>);

/// One fetch in flight: done once stored, failed or abandoned.
#[derive(Default)]
pub struct Flight {
    done: Cell<bool>,
    waiting: RefCell<Vec<Waker>>,
}

/// What a request does about a blob: fetch it (holding the fetch, which ends when this is
/// dropped), or wait for the fetch in flight.
pub enum Boarding {
    Fetch(FlightGuard),
    Wait(Rc<Flight>),
}

/// The fetch a request holds; dropping it (the blob stored, the fetch failed, the request
/// abandoned) lets the waiting requests go on.
pub struct FlightGuard {
    flights: Rc<RefCell<HashMap<String, Rc<Flight>>>>,
    key: String,
    flight: Rc<Flight>,
}

impl Flights {
    /// Fetches `key` unless a fetch of it is in flight, in which case waits for that one.
    pub fn board(&self, key: &str) -> Boarding {
        if let Some(flight) = self.0.borrow().get(key) {
            return Boarding::Wait(flight.clone());
        }
        let flight = Rc::new(Flight::default());
        self.0.borrow_mut().insert(key.to_owned(), flight.clone());
        Boarding::Fetch(FlightGuard { flights: self.0.clone(), key: key.to_owned(), flight })
    }

    /// The fetch of `key` in flight, if any.
    pub fn in_flight(&self, key: &str) -> Option<Rc<Flight>> {
        self.0.borrow().get(key).cloned()
    }
}

impl Flight {
    /// Resolves once the fetch is over, whatever its outcome.
    pub async fn landed(&self) {
        poll_fn(|cx| match self.done.get() {
            true => Poll::Ready(()),
            false => {
                self.waiting.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.flight.done.set(true);
        self.flight.waiting.borrow_mut().drain(..).for_each(Waker::wake);
        let mut flights = self.flights.borrow_mut();
        if flights.get(&self.key).is_some_and(|f| Rc::ptr_eq(f, &self.flight)) {
            flights.remove(&self.key);
        }
    }
}
