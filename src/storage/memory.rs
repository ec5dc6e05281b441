//! In-memory twins of R2 and KV for native tests. Cloning shares the same store, so a test can
//! keep a handle and inspect what a request left behind.

use super::*;
use crate::base::http::{BodyReader, MemoryBody};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Clone)]
struct StoredObject {
    bytes: Vec<u8>,
    meta: ObjectMeta,
}

/// A multipart upload in progress: its key, options, and parts by number (etag, bytes).
type PendingUpload = (String, PutOptions, BTreeMap<u16, (String, Vec<u8>)>);

#[derive(Debug, Default)]
struct ObjectsInner {
    objects: BTreeMap<String, StoredObject>,
    /// The clock of `uploaded_ms`, set by tests.
    now_ms: u64,
    uploads: HashMap<String, PendingUpload>,
    next_etag: u64,
    /// Storage operations so far (each a round trip to R2 in production).
    operations: usize,
    faults: Faults,
    counter: Operations,
    platform: Option<Platform>,
}

/// A storage operation as it is billed: R2 reads (Class B: head, get, list), R2 writes (Class A:
/// put, delete, multipart calls), KV reads (get, list) and KV writes (put, delete; ten times
/// a read's price).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    R2Read,
    R2Write,
    KvRead,
    KvWrite,
}

/// What requests cost in storage: operations by kind, and the sequential round trips, the
/// longest chain of operations each of which started after the one before it had answered.
/// Operations started while others are in flight (side by side, as `join` runs them) share a
/// round trip. Shared by the object store and the KV store of one registry.
#[derive(Debug, Clone, Default)]
pub struct Operations(Rc<RefCell<OperationsInner>>);

#[derive(Debug, Default)]
struct OperationsInner {
    counts: Counts,
    /// The round of the latest operation to have answered.
    answered_round: usize,
}

/// Storage operations by kind, and sequential round trips (see [`Operations`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub r2_reads: usize,
    pub r2_writes: usize,
    pub kv_reads: usize,
    pub kv_writes: usize,
    pub round_trips: usize,
}

impl Operations {
    pub fn new() -> Self {
        Self::default()
    }

    /// What was counted since the last `take`, and a fresh start.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.0.borrow_mut()).counts
    }

    /// Counts an operation of `kind`: it is in flight until its caller is polled again, so
    /// that operations started side by side overlap, as they do against R2 and KV.
    async fn run(&self, kind: Kind) {
        let round = {
            let mut inner = self.0.borrow_mut();
            let counts = &mut inner.counts;
            *match kind {
                Kind::R2Read => &mut counts.r2_reads,
                Kind::R2Write => &mut counts.r2_writes,
                Kind::KvRead => &mut counts.kv_reads,
                Kind::KvWrite => &mut counts.kv_writes,
            } += 1;
            let round = inner.answered_round + 1;
            inner.counts.round_trips = inner.counts.round_trips.max(round);
            round
        };
        let mut yielded = false;
        poll_fn(|cx| match std::mem::replace(&mut yielded, true) {
            false => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            true => Poll::Ready(()),
        })
        .await;
        let mut inner = self.0.borrow_mut();
        inner.answered_round = inner.answered_round.max(round);
    }
}

/// How an injected fault behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The operation fails; later ones succeed (a storage error the request sees).
    Error,
    /// The operation and every later one fail, as if the Worker had stopped there: nothing
    /// after it reaches storage.
    Crash,
}

/// Faults shared by an object store and a KV store, counting their operations together, so a
/// test can fail "the Nth storage operation" of a request wherever it lands.
#[derive(Debug, Clone, Default)]
pub struct Faults(Rc<RefCell<FaultPlan>>);

#[derive(Debug, Default)]
struct FaultPlan {
    count: usize,
    at: Option<(usize, Fault)>,
    pause: Option<(usize, Pause)>,
}

/// A point where a request stops until the test lets it go on, so that another request can run
/// in between: races, made deterministic. See [`Faults::pause_at`].
#[derive(Debug, Clone, Default)]
pub struct Pause(Rc<RefCell<PauseState>>);

#[derive(Debug, Default)]
struct PauseState {
    reached: bool,
    released: bool,
    /// The paused request, and the test waiting for the pause.
    wakers: Vec<Waker>,
}

impl Pause {
    /// Resolves once the paused request has stopped at its operation, or [`Pause::release`]
    /// was called (the request ended before reaching it).
    pub async fn reached(&self) {
        poll_fn(|cx| self.poll_until(cx, |s| s.reached || s.released)).await
    }
    /// Lets the paused request go on (or, called first, makes it never stop).
    pub fn release(&self) {
        let mut state = self.0.borrow_mut();
        state.released = true;
        state.wakers.drain(..).for_each(Waker::wake);
    }
    /// Whether a request stopped here.
    pub fn was_reached(&self) -> bool {
        self.0.borrow().reached
    }
    async fn wait(&self) {
        {
            let mut state = self.0.borrow_mut();
            state.reached = true;
            state.wakers.drain(..).for_each(Waker::wake);
        }
        poll_fn(|cx| self.poll_until(cx, |s| s.released)).await
    }
    fn poll_until(&self, cx: &mut Context<'_>, done: impl Fn(&PauseState) -> bool) -> Poll<()> {
        let mut state = self.0.borrow_mut();
        if done(&state) {
            return Poll::Ready(());
        }
        state.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}

impl Faults {
    pub fn new() -> Self {
        Self::default()
    }
    /// Fails the `n`th operation from now (1-based) the given way.
    pub fn fail_at(&self, n: usize, fault: Fault) {
        let mut plan = self.0.borrow_mut();
        plan.count = 0;
        plan.at = Some((n, fault));
    }
    /// No more faults; counting starts over.
    pub fn clear(&self) {
        *self.0.borrow_mut() = FaultPlan::default();
    }
    /// Operations since the last `fail_at`, `pause_at` or `clear`.
    pub fn count(&self) -> usize {
        self.0.borrow().count
    }
    /// Stops the `n`th operation from now (1-based) before it runs, until the returned pause is
    /// released; operations of other requests meanwhile go through.
    pub fn pause_at(&self, n: usize) -> Pause {
        let pause = Pause::default();
        self.pause_with(n, &pause);
        pause
    }
    /// [`Faults::pause_at`] with a pause made beforehand.
    pub fn pause_with(&self, n: usize, pause: &Pause) {
        let mut plan = self.0.borrow_mut();
        plan.count = 0;
        plan.pause = Some((n, pause.clone()));
    }
    async fn check(&self) -> Result<()> {
        let pause = {
            let mut plan = self.0.borrow_mut();
            plan.count += 1;
            match plan.at {
                Some((n, Fault::Error)) if plan.count == n => return Err(StorageError::new("injected fault")),
                Some((n, Fault::Crash)) if plan.count >= n => return Err(StorageError::new("injected crash")),
                _ => {}
            }
            match &plan.pause {
                Some((n, _)) if plan.count == *n => plan.pause.take().map(|(_, p)| p),
                _ => None,
            }
        };
        if let Some(pause) = pause {
            pause.wait().await;
        }
        Ok(())
    }
}

/// A model of the platform as Cloudflare documents it, on a clock the test controls, shared by
/// the stores of every "location" of one test (see docs/testing.md, "The platform model"):
/// - KV and R2 take one write per second per key and refuse a second with 429
///   ([KV limits](https://developers.cloudflare.com/kv/platform/limits/), R2's
///   "concurrent writes to the same object" limit);
/// - each request has budgets: subrequests (50 on the Free plan, 1,000 or 10,000 on Paid as
///   configured) and 1,000 KV operations ([Workers limits](https://developers.cloudflare.com/workers/platform/limits/));
///   a request that exhausts one fails as the platform fails it;
/// - KV reads and lists are cached per location ([`MemoryKv::at_location`]).
///
/// Every R2 and KV call counts as a subrequest here: what the Free plan's budget is checked
/// against.
#[derive(Debug, Clone)]
pub struct Platform(Rc<PlatformInner>);

#[derive(Debug)]
struct PlatformInner {
    /// The clock, in seconds since the epoch: the registry's own clock reads it too.
    now: Rc<Cell<u64>>,
    /// The second of each key's latest write, by store ("r2:" or "kv:" and the key).
    last_write: RefCell<HashMap<String, u64>>,
    subrequest_limit: usize,
    /// What the request being answered has used so far.
    used: Cell<Usage>,
}

/// What one request used of its budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub subrequests: usize,
    pub kv_operations: usize,
}

/// KV operations one invocation may make, on every plan.
pub const KV_OPERATIONS_PER_REQUEST: usize = 1000;

/// How long a location's KV cache keeps what it read, misses included (KV's default `cacheTtl`).
pub const KV_CACHE_SECONDS: u64 = 60;

/// Subrequests a request may make on the Free plan.
pub const FREE_PLAN_SUBREQUESTS: usize = 50;

impl Platform {
    /// A platform whose requests may each make `subrequest_limit` subrequests, on `now`.
    pub fn new(now: Rc<Cell<u64>>, subrequest_limit: usize) -> Self {
        Self(Rc::new(PlatformInner { now, last_write: RefCell::default(), subrequest_limit, used: Cell::default() }))
    }

    pub fn now(&self) -> u64 {
        self.0.now.get()
    }

    /// A new request begins: its budgets are whole again. Returns what the last one used.
    pub fn begin_request(&self) -> Usage {
        self.0.used.take()
    }

    /// What the request being answered has used so far.
    pub fn used(&self) -> Usage {
        self.0.used.get()
    }

    /// Charges one operation to the request's budgets.
    fn charge(&self, kv: bool) -> Result<()> {
        let mut used = self.0.used.get();
        used.subrequests += 1;
        used.kv_operations += usize::from(kv);
        self.0.used.set(used);
        if used.subrequests > self.0.subrequest_limit {
            return Err(StorageError::new("Too many subrequests."));
        }
        if used.kv_operations > KV_OPERATIONS_PER_REQUEST {
            return Err(StorageError::new("Too many API requests by single worker invocation."));
        }
        Ok(())
    }

    /// Records a write to `key` of `store`, refused (429) within a second of the last one.
    fn write(&self, store: &str, key: &str) -> Result<()> {
        let now = self.now();
        let previous = self.0.last_write.borrow_mut().insert(format!("{store}:{key}"), now);
        match previous {
            Some(at) if at == now => Err(StorageError::rate_limited(format!("{store} {key}: one write per second"))),
            _ => Ok(()),
        }
    }
}

/// Largest custom metadata R2 stores with an object (names and values together).
pub const R2_MAX_METADATA: usize = 8 * 1024;

/// The in-memory object store.
#[derive(Debug, Clone, Default)]
pub struct MemoryObjects(Rc<RefCell<ObjectsInner>>);

impl MemoryObjects {
    pub fn new() -> Self {
        Self::default()
    }
    /// Every stored object's key and bytes, for "nothing changed" assertions.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.0.borrow().objects.iter().map(|(k, v)| (k.clone(), v.bytes.clone())).collect()
    }
    /// An object's metadata, read without counting as an operation.
    pub fn metadata(&self, key: &str) -> Option<ObjectMeta> {
        self.0.borrow().objects.get(key).map(|o| o.meta.clone())
    }
    /// Sets the time stamped on objects written from now on.
    pub fn set_now_ms(&self, now_ms: u64) {
        self.0.borrow_mut().now_ms = now_ms;
    }
    /// Shares `faults` with this store (see [`Faults`]).
    pub fn with_faults(self, faults: Faults) -> Self {
        self.0.borrow_mut().faults = faults;
        self
    }
    /// Shares `operations` with this store (see [`Operations`]).
    pub fn with_operations(self, operations: Operations) -> Self {
        self.0.borrow_mut().counter = operations;
        self
    }
    /// Puts this store on the platform model (see [`Platform`]).
    pub fn on_platform(self, platform: &Platform) -> Self {
        self.0.borrow_mut().platform = Some(platform.clone());
        self
    }
    /// Counts an operation, and fails or pauses it if so planned or the platform refuses it.
    async fn begin(&self, kind: Kind) -> Result<()> {
        let (faults, counter, platform) = {
            let mut inner = self.0.borrow_mut();
            inner.operations += 1;
            (inner.faults.clone(), inner.counter.clone(), inner.platform.clone())
        };
        counter.run(kind).await;
        faults.check().await?;
        platform.map_or(Ok(()), |p| p.charge(false))
    }
    /// [`MemoryObjects::begin`] for a write to `key`, which the platform takes once a second.
    async fn begin_write(&self, key: &str) -> Result<()> {
        self.begin(Kind::R2Write).await?;
        let platform = self.0.borrow().platform.clone();
        platform.map_or(Ok(()), |p| p.write("r2", key))
    }
    /// Storage operations so far: each one a round trip to R2 in production.
    pub fn operations(&self) -> usize {
        self.0.borrow().operations
    }
    /// Number of multipart uploads started and neither completed nor aborted.
    pub fn open_multipart_uploads(&self) -> usize {
        self.0.borrow().uploads.len()
    }
}

/// R2 refuses custom metadata over [`R2_MAX_METADATA`] (its error 10012).
fn check_metadata(options: &PutOptions) -> Result<()> {
    let size: usize = options.custom.iter().map(|(n, v)| n.len() + v.len()).sum();
    match size > R2_MAX_METADATA {
        true => Err(StorageError::new(format!(
            "put: Your metadata headers exceed the maximum allowed metadata size. ({size} bytes) (10012)"
        ))),
        false => Ok(()),
    }
}

fn etag(inner: &mut ObjectsInner) -> String {
    inner.next_etag += 1;
    format!("m{}", inner.next_etag)
}

/// Writes an object with a fresh etag and returns its metadata.
fn store(inner: &mut ObjectsInner, key: &str, bytes: Vec<u8>, options: PutOptions) -> ObjectMeta {
    let meta = ObjectMeta {
        key: key.to_owned(),
        size: bytes.len() as u64,
        etag: etag(inner),
        content_type: options.content_type,
        custom: options.custom,
        uploaded_ms: inner.now_ms,
    };
    inner.objects.insert(key.to_owned(), StoredObject { bytes, meta: meta.clone() });
    meta
}

fn page<T: Clone>(
    items: impl Iterator<Item = (String, T)>,
    cursor: Option<&str>,
    limit: u32,
) -> (Vec<T>, Option<String>) {
    let limit = limit.clamp(1, 1000) as usize;
    let mut out = Vec::new();
    let mut last = None;
    let mut more = false;
    for (k, v) in items.filter(|(k, _)| cursor.is_none_or(|c| k.as_str() > c)) {
        if out.len() == limit {
            more = true;
            break;
        }
        last = Some(k);
        out.push(v);
    }
    (out, if more { last } else { None })
}

impl ObjectStore for MemoryObjects {
    type Body = Vec<u8>;
    type Upload = MemoryBody;

    async fn put_verified(
        &self,
        key: &str,
        mut body: MemoryBody,
        length: u64,
        digest: &Digest,
        options: PutOptions,
    ) -> Result<bool> {
        self.begin_write(key).await?;
        check_metadata(&options)?;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.chunk().await.map_err(StorageError::body_broken)? {
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() as u64 != length {
            return Err(StorageError::body_broken(format!("body of {} bytes, {length} announced", bytes.len())));
        }
        if digest.recompute(&bytes) != *digest {
            return Ok(false);
        }
        store(&mut self.0.borrow_mut(), key, bytes, options);
        Ok(true)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.begin(Kind::R2Read).await?;
        Ok(self.0.borrow().objects.get(key).map(|o| o.meta.clone()))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<(ObjectMeta, Vec<u8>)>> {
        let Some((meta, bytes)) = self.get_bytes(key).await? else { return Ok(None) };
        let Some(r) = range else { return Ok(Some((meta, bytes))) };
        let (start, end) = (r.offset as usize, (r.offset + r.length) as usize);
        let slice = bytes.get(start..end).ok_or_else(|| StorageError::new(format!("range {r:?} outside {key}")))?;
        Ok(Some((meta, slice.to_vec())))
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<(ObjectMeta, Vec<u8>)>> {
        self.begin(Kind::R2Read).await?;
        Ok(self.0.borrow().objects.get(key).map(|o| (o.meta.clone(), o.bytes.clone())))
    }

    async fn upload_part_streamed<S: PartSource>(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        length: u64,
        source: &mut S,
    ) -> Result<Part> {
        let mut bytes = Vec::new();
        while (bytes.len() as u64) < length
            && let Some(chunk) = source.next().await
        {
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() as u64 != length {
            return Err(StorageError::new(format!("part of {} bytes, {length} announced", bytes.len())));
        }
        self.upload_part(key, upload_id, number, bytes).await
    }

    async fn read_range(&self, key: &str, range: ByteRange) -> Result<Option<Vec<u8>>> {
        Ok(self.get(key, Some(range)).await?.map(|(_, bytes)| bytes))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, options: PutOptions) -> Result<Option<ObjectMeta>> {
        self.begin_write(key).await?;
        check_metadata(&options)?;
        let mut inner = self.0.borrow_mut();
        if let Some(expected) = &options.if_etag_matches
            && inner.objects.get(key).map(|o| &o.meta.etag) != Some(expected)
        {
            return Ok(None);
        }
        let meta = store(&mut inner, key, bytes, options);
        Ok(Some(meta))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.begin_write(key).await?;
        self.0.borrow_mut().objects.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str, from: ListFrom<'_>, limit: u32) -> Result<ObjectPage> {
        self.begin(Kind::R2Read).await?;
        // The memory twin's cursors are the last key of the page, so both forms mean "after".
        let cursor = match from {
            ListFrom::Beginning => None,
            ListFrom::Cursor(c) | ListFrom::After(c) => Some(c),
        };
        let inner = self.0.borrow();
        let items = inner
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| (k.clone(), o.meta.clone()));
        let (objects, cursor) = page(items, cursor, limit);
        Ok(ObjectPage { objects, cursor })
    }

    async fn create_multipart(&self, key: &str, options: PutOptions) -> Result<String> {
        self.begin(Kind::R2Write).await?;
        check_metadata(&options)?;
        let mut inner = self.0.borrow_mut();
        let id = etag(&mut inner);
        inner.uploads.insert(id.clone(), (key.to_owned(), options, BTreeMap::new()));
        Ok(id)
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Vec<u8>) -> Result<Part> {
        self.begin(Kind::R2Write).await?;
        let mut inner = self.0.borrow_mut();
        let etag = etag(&mut inner);
        match inner.uploads.get_mut(upload_id) {
            Some((k, _, parts)) if k == key && number >= 1 => {
                parts.insert(number, (etag.clone(), bytes));
                Ok(Part { number, etag })
            }
            _ => Err(StorageError::new(format!("no multipart upload {upload_id} for {key}"))),
        }
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[Part]) -> Result<ObjectMeta> {
        self.begin_write(key).await?;
        let mut inner = self.0.borrow_mut();
        let Some((k, options, stored)) = inner.uploads.get(upload_id) else {
            return Err(StorageError::new(format!("no multipart upload {upload_id}")));
        };
        if k != key || parts.is_empty() {
            return Err(StorageError::new("multipart completion with no parts or the wrong key"));
        }
        let mut bytes = Vec::new();
        let mut first_size = None;
        for (i, p) in parts.iter().enumerate() {
            let Some((_, data)) = stored.get(&p.number).filter(|(e, _)| *e == p.etag) else {
                return Err(StorageError::new(format!("part {} unknown or etag mismatch", p.number)));
            };
            let last = i + 1 == parts.len();
            // R2: all parts but the last are equal and at least MIN_PART_SIZE.
            if !last && (data.len() < MIN_PART_SIZE || first_size.is_some_and(|s| s != data.len())) {
                return Err(StorageError::new(format!("part {} has an invalid size {}", p.number, data.len())));
            }
            if last && first_size.is_some_and(|s| data.len() > s) {
                return Err(StorageError::new("last part larger than the others"));
            }
            first_size.get_or_insert(data.len());
            bytes.extend_from_slice(data);
        }
        let options = options.clone();
        inner.uploads.remove(upload_id);
        let meta = store(&mut inner, key, bytes, options);
        Ok(meta)
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<()> {
        self.begin(Kind::R2Write).await?;
        self.0.borrow_mut().uploads.remove(upload_id);
        Ok(())
    }
}

/// The in-memory KV store. Alone, strongly consistent, unlike real KV; at a location of the
/// platform model ([`MemoryKv::at_location`]), as eventually consistent as KV documents.
#[derive(Debug, Clone, Default)]
pub struct MemoryKv {
    entries: Rc<RefCell<BTreeMap<String, KvEntry>>>,
    faults: Faults,
    counter: Operations,
    /// While set, every put is refused as KV refuses writes over its per-key rate.
    refuse_puts: Rc<RefCell<bool>>,
    location: Option<Rc<Location>>,
}

/// One location's view of KV on the platform model: what it read is served from its cache for
/// [`KV_CACHE_SECONDS`], misses included, and so are its lists; its own writes it sees at once
/// ([KV: how it works](https://developers.cloudflare.com/kv/concepts/how-kv-works/)).
#[derive(Debug)]
struct Location {
    platform: Platform,
    reads: RefCell<HashMap<String, (Option<KvEntry>, u64)>>,
    lists: RefCell<HashMap<String, (KvPage, u64)>>,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.entries.borrow().iter().map(|(k, v)| (k.clone(), v.value.clone())).collect()
    }
    /// The same namespace as seen from a new location of `platform`, with a cache of its own.
    pub fn at_location(&self, platform: &Platform) -> Self {
        let location = Location { platform: platform.clone(), reads: RefCell::default(), lists: RefCell::default() };
        Self { location: Some(Rc::new(location)), ..self.clone() }
    }
    /// Shares `faults` with this store (see [`Faults`]).
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
    /// Shares `operations` with this store (see [`Operations`]).
    pub fn with_operations(mut self, operations: Operations) -> Self {
        self.counter = operations;
        self
    }
    /// Counts an operation, and fails or pauses it if so planned or the platform refuses it.
    async fn begin(&self, kind: Kind) -> Result<()> {
        self.counter.run(kind).await;
        self.faults.check().await?;
        match &self.location {
            Some(l) => l.platform.charge(true),
            None => Ok(()),
        }
    }
    /// [`MemoryKv::begin`] for a write to `key`: the platform takes one a second, and this
    /// location sees it at once.
    async fn begin_write(&self, key: &str, value: Option<KvEntry>) -> Result<()> {
        self.begin(Kind::KvWrite).await?;
        if *self.refuse_puts.borrow() {
            return Err(StorageError::rate_limited(format!("KV put of {key}: too many requests")));
        }
        if let Some(l) = &self.location {
            l.platform.write("kv", key)?;
            let expires = l.platform.now() + KV_CACHE_SECONDS;
            l.reads.borrow_mut().insert(key.to_owned(), (value, expires));
        }
        Ok(())
    }
    /// Makes puts fail as rate-limited (`true`) or succeed again (`false`).
    pub fn refuse_puts(&self, refuse: bool) {
        *self.refuse_puts.borrow_mut() = refuse;
    }
}

impl KeyValueStore for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>> {
        self.begin(Kind::KvRead).await?;
        let read = || self.entries.borrow().get(key).cloned();
        let Some(l) = &self.location else { return Ok(read()) };
        let now = l.platform.now();
        if let Some((cached, _)) = l.reads.borrow().get(key).filter(|(_, expires)| now < *expires) {
            return Ok(cached.clone());
        }
        let value = read();
        l.reads.borrow_mut().insert(key.to_owned(), (value.clone(), now + KV_CACHE_SECONDS));
        Ok(value)
    }

    async fn put(&self, key: &str, value: &str, metadata: Option<&serde_json::Value>) -> Result<()> {
        if let Some(m) = metadata {
            let len = m.to_string().len();
            if len > KV_MAX_METADATA {
                self.begin(Kind::KvWrite).await?;
                return Err(StorageError::new(format!("KV metadata of {len} bytes exceeds {KV_MAX_METADATA}")));
            }
        }
        let entry = KvEntry { value: value.to_owned(), metadata: metadata.cloned() };
        self.begin_write(key, Some(entry.clone())).await?;
        self.entries.borrow_mut().insert(key.to_owned(), entry);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.begin_write(key, None).await?;
        self.entries.borrow_mut().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<KvPage> {
        self.begin(Kind::KvRead).await?;
        let list = || {
            let map = self.entries.borrow();
            let items = map
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), KvKey { name: k.clone(), metadata: v.metadata.clone() }));
            let (keys, cursor) = page(items, cursor, limit);
            KvPage { keys, cursor }
        };
        let Some(l) = &self.location else { return Ok(list()) };
        let now = l.platform.now();
        let query = format!("{prefix}\n{}\n{limit}", cursor.unwrap_or_default());
        if let Some((cached, _)) = l.lists.borrow().get(&query).filter(|(_, expires)| now < *expires) {
            return Ok(cached.clone());
        }
        let page = list();
        l.lists.borrow_mut().insert(query, (page.clone(), now + KV_CACHE_SECONDS));
        Ok(page)
    }
}
