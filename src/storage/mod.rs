//! The two storage contracts wharf is written against, shaped like R2 and Workers KV.
//!
//! Both are deliberately narrow: what R2 and KV do, and nothing a backend would have to emulate.
//! [`memory`] is the in-memory twin for native tests; the Worker implements them over the R2
//! and KV bindings (`src/worker/`). [`suite`] is the one contract test suite both run.
//!
//! No `Send` bounds: a Worker isolate is single-threaded, and the futures of the JS bindings are
//! not `Send`.
#![allow(async_fn_in_trait)]

pub mod keys;
pub mod memo;
pub mod memory;
pub mod retry;
pub mod suite;

use crate::base::error::{ErrorCode, RegistryError, body_error};
use crate::base::names::Digest;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;

/// A backend failure. Never a client's fault: it surfaces as 500 UNKNOWN and is logged,
/// except when the backend refused for load (KV's one write per second per key), which the
/// client may retry: 429 TOOMANYREQUESTS.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageError {
    pub message: String,
    pub rate_limited: bool,
    /// The request body the store was reading broke off (a client that went away, or sent
    /// fewer bytes than it announced): the client's failure, not the store's.
    pub body_broken: bool,
}

impl StorageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), rate_limited: false, body_broken: false }
    }
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self { message: message.into(), rate_limited: true, body_broken: false }
    }
    pub fn body_broken(message: impl Into<String>) -> Self {
        Self { message: message.into(), rate_limited: false, body_broken: true }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage: {}", self.message)
    }
}

/// What the client sees of a backend failure.
impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        if e.rate_limited {
            crate::base::log::error(&format!("rate limited: {e}"));
            return RegistryError::new(ErrorCode::TooManyRequests)
                .with_message("too many writes to the same key; retry shortly")
                .with_header("Retry-After", "1");
        }
        if e.body_broken {
            return body_error(e.message);
        }
        RegistryError::internal(e)
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// Custom metadata of an object (R2 `customMetadata`): a few name/value strings, kept sorted
/// by name. One concrete type rather than a map generic over its entries: each instantiation
/// of a std map, and of the sort that building one needs, costs the wasm KiBs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata(Vec<(String, String)>);

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, name: &str) -> std::result::Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&String> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    /// Sets `name`, replacing its value if it had one.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        match self.position(&name) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// In order of name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(n, v)| (n, v))
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Self {
        let mut m = Metadata::new();
        for (n, v) in pairs {
            m.insert(n, v);
        }
        m
    }
}

/// As a JSON object of strings, in order of name.
impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// From a JSON object of strings, each name once.
impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        crate::base::de::Members::<String>::deserialize(deserializer).map(|m| m.0.into_iter().collect())
    }
}

/// `metadata["name"]`, for tests: panics when absent, as a map's index does.
impl std::ops::Index<&str> for Metadata {
    type Output = String;
    fn index(&self, name: &str) -> &String {
        self.get(name).expect("no such metadata")
    }
}

/// What an object store knows about an object without reading its body. (Serialisable for
/// the collector, which keeps what it listed from one step to the next.)
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Changes whenever the object is rewritten; used for conditional puts.
    pub etag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    pub custom: Metadata,
    /// When the object was written, in milliseconds since the Unix epoch.
    pub uploaded_ms: u64,
}

/// A byte range of an object: `length` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

/// Options of a put: HTTP content type and custom metadata (R2: at most 8 KiB together), and
/// an optional condition.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub custom: Metadata,
    /// Write only if the object currently has this etag (R2 `onlyIf.etagMatches`).
    pub if_etag_matches: Option<String>,
}

/// Where a listing starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFrom<'a> {
    Beginning,
    /// Where a previous page ended (its `cursor`).
    Cursor(&'a str),
    /// After this key, exclusive (R2 `startAfter`).
    After(&'a str),
}

/// One page of a listing, in lexicographic key order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectPage {
    pub objects: Vec<ObjectMeta>,
    /// Present when more keys follow; pass it back to continue.
    pub cursor: Option<String>,
}

/// A finished part of a multipart upload; both fields are needed to complete it. Upload
/// sessions keep theirs as `{"number","etag"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub number: u16,
    pub etag: String,
}

/// Smallest size R2 accepts for every part of a multipart upload except the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Most parts R2 takes in one multipart upload.
pub const MAX_PARTS: usize = 10_000;

/// An object store shaped like R2.
///
/// # Contract
/// - Strongly consistent: once a put, delete or multipart completion returns, every later call
///   anywhere sees it (R2's read-after-write and list-after-write guarantee).
/// - A put is atomic: readers see the previous object or the whole new one, never a mix.
/// - A multipart upload is invisible under its key until [`complete_multipart`] returns; parts
///   other than the last must all have the same size, at least [`MIN_PART_SIZE`]; part numbers
///   start at 1. An aborted or never-completed upload leaves nothing visible.
/// - Missing objects are `Ok(None)`, never an error; deleting a missing object succeeds.
///
/// [`complete_multipart`]: ObjectStore::complete_multipart
pub trait ObjectStore {
    /// A streamed object body, handed to the HTTP layer without being read by wharf.
    type Body;
    /// A request body the store can write without wharf reading it.
    type Upload;

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;
    /// The object with its body as a stream, for responses; with a range, only those bytes
    /// (the range must lie within the object; the metadata still describes the whole object).
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<(ObjectMeta, Self::Body)>>;
    /// The object read whole; only for small objects wharf itself wrote (state, manifests).
    async fn get_bytes(&self, key: &str) -> Result<Option<(ObjectMeta, Vec<u8>)>>;
    /// Bytes `range` of the object, read into memory: a large object read back piece by piece.
    /// The range must lie within the object. `Ok(None)` if the object is missing.
    async fn read_range(&self, key: &str, range: ByteRange) -> Result<Option<Vec<u8>>>;
    /// Writes the object. `Ok(None)` when `if_etag_matches` was given and did not hold (nothing
    /// written), else the new object's metadata.
    async fn put(&self, key: &str, bytes: Vec<u8>, options: PutOptions) -> Result<Option<ObjectMeta>>;
    /// Writes `body`, exactly `length` bytes, only if its digest is `digest` (sha256 or sha512),
    /// which the store itself checks while writing. `Ok(false)`: the bytes had another digest
    /// and nothing was written. A body that breaks off or ends short is an error with
    /// `body_broken` set, and nothing is written either.
    async fn put_verified(
        &self,
        key: &str,
        body: Self::Upload,
        length: u64,
        digest: &Digest,
        options: PutOptions,
    ) -> Result<bool>;
    async fn delete(&self, key: &str) -> Result<()>;
    /// Keys starting with `prefix`, at most `limit` of them (a page may hold fewer and still have
    /// a cursor), from `from`, with their content type and custom metadata.
    async fn list(&self, prefix: &str, from: ListFrom<'_>, limit: u32) -> Result<ObjectPage>;

    /// Starts a multipart upload to `key`; returns its upload id.
    async fn create_multipart(&self, key: &str, options: PutOptions) -> Result<String>;
    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Vec<u8>) -> Result<Part>;
    /// Uploads part `number`: exactly `length` bytes, taken from `source` while they go out, so
    /// that a part travels to storage as it arrives instead of after it. Fails, storing no
    /// part, if `source` ends early.
    async fn upload_part_streamed<S: PartSource>(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        length: u64,
        source: &mut S,
    ) -> Result<Part>;
    /// Makes the object visible under `key` from the given parts, in order.
    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[Part]) -> Result<ObjectMeta>;
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()>;
}

/// The bytes of a part streamed by [`ObjectStore::upload_part_streamed`].
pub trait PartSource {
    /// The next bytes; `None` once the part is whole, or when no more can come (the source
    /// keeps its own reason).
    async fn next(&mut self) -> Option<Vec<u8>>;
}

/// A listing walked key by key, page after page (wharf asks for the largest pages, 1000 keys).
pub struct Listing {
    prefix: String,
    /// Where the first page starts: after this key, or at the beginning.
    start_after: Option<String>,
    cursor: Option<String>,
    page: VecDeque<ObjectMeta>,
    done: bool,
}

impl Listing {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into(), start_after: None, cursor: None, page: VecDeque::new(), done: false }
    }

    /// The keys after `key` (exclusive), or all of them for `None`.
    pub fn after(prefix: impl Into<String>, key: Option<String>) -> Self {
        Self { start_after: key, ..Self::new(prefix) }
    }

    /// Leaves out every key up to `key`: those of the page in hand, and if that empties it, the
    /// next page starts after `key` rather than where the last one ended. A listing passes over
    /// a run of keys it does not need for the price of one page.
    pub fn skip_past(&mut self, key: &str) {
        while self.page.front().is_some_and(|m| m.key.as_str() <= key) {
            self.page.pop_front();
        }
        if self.page.is_empty() && !self.done {
            self.cursor = None;
            self.start_after = Some(key.to_owned());
        }
    }

    pub async fn next<O: ObjectStore>(&mut self, objects: &O) -> Result<Option<ObjectMeta>> {
        loop {
            if let Some(meta) = self.page.pop_front() {
                return Ok(Some(meta));
            }
            if self.done {
                return Ok(None);
            }
            let from = match (&self.cursor, &self.start_after) {
                (Some(cursor), _) => ListFrom::Cursor(cursor),
                (None, Some(key)) => ListFrom::After(key),
                (None, None) => ListFrom::Beginning,
            };
            let page = objects.list(&self.prefix, from, 1000).await?;
            self.page = page.objects.into();
            self.done = page.cursor.is_none();
            self.cursor = page.cursor;
        }
    }
}

/// A value read from KV with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    pub value: String,
    pub metadata: Option<serde_json::Value>,
}

/// A listed KV key with its metadata (KV returns metadata with list results, value not).
#[derive(Debug, Clone, PartialEq)]
pub struct KvKey {
    pub name: String,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct KvPage {
    pub keys: Vec<KvKey>,
    /// Present when more keys follow.
    pub cursor: Option<String>,
}

/// Largest metadata Workers KV stores with a key, serialised as JSON.
pub const KV_MAX_METADATA: usize = 1024;

/// A key-value store shaped like Workers KV.
///
/// # Contract
/// - Eventually consistent: a write is visible at once in the location that made it, but other
///   locations may read the old value (or a cached miss) for 60 s or more. Lists lag the same way.
///   No compare-and-swap, and about one write per second per key.
/// - List returns keys in lexicographic byte order with their metadata, at most `limit` (<= 1000)
///   per page.
/// - Missing keys are `Ok(None)`; deleting a missing key succeeds.
/// - Metadata is JSON of at most [`KV_MAX_METADATA`] bytes.
///
/// wharf therefore keeps only tag -> digest here: a stale tag read serves an older, still valid
/// manifest, never a broken one, because R2 bytes are written before the tag.
pub trait KeyValueStore {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>>;
    async fn put(&self, key: &str, value: &str, metadata: Option<&serde_json::Value>) -> Result<()>;
    async fn delete(&self, key: &str) -> Result<()>;
    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<KvPage>;
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryObjects;
    use super::*;
    use futures_executor::block_on;

    #[test]
    fn a_listing_skips_past_keys_in_its_page_or_by_starting_after_them() {
        let objects = MemoryObjects::new();
        for i in 0..2500 {
            block_on(objects.put(&format!("k/{i:04}"), Vec::new(), PutOptions::default())).unwrap();
        }
        let start = objects.operations();
        let mut listing = Listing::new("k/");
        let mut seen = Vec::new();
        while let Some(meta) = block_on(listing.next(&objects)).unwrap() {
            seen.push(meta.key.clone());
            match meta.key.as_str() {
                // Within the page in hand: no listing more.
                "k/0010" => listing.skip_past("k/0500"),
                // Past the page in hand: the next listing starts after the key.
                "k/0900" => listing.skip_past("k/2399"),
                _ => {}
            }
        }
        let expected: Vec<String> = (0..=10).chain(501..=900).chain(2400..2500).map(|i| format!("k/{i:04}")).collect();
        assert_eq!(seen, expected);
        // The first page of 1,000 keys, then one from k/2399 on.
        assert_eq!(objects.operations() - start, 2);
    }
}
