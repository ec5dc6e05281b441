//! The platform's refusals for load, retried inside the request where that is safe.
//!
//! R2 and KV each take about one write per second per key and answer 429 past that
//! ([KV limits](https://developers.cloudflare.com/kv/platform/limits/); R2's error 10058,
//! "Reduce your concurrent request rate for the same object"). A refused write did nothing,
//! so writing again is safe whenever wharf still holds what it meant to write: a put of bytes
//! in memory, a delete, a multipart call. A write that consumed a request body (a verified
//! put, a streamed part) cannot be sent again: its 429 goes to the client, as
//! TOOMANYREQUESTS with `Retry-After` (see `StorageError`), and the client sends it again.
//!
//! [`Retrying`] wraps a store: every store the registry uses goes through it, natively and on
//! Workers alike, so the policy is tested where it runs.

use super::*;
use futures_util::future::LocalBoxFuture;
use std::cell::Cell;
use std::rc::Rc;

/// Waits this many milliseconds: the host's timer (Workers' `setTimeout`; the tests' clock).
pub type Sleep = Rc<dyn Fn(u64) -> LocalBoxFuture<'static, ()>>;

/// Retries after a refusal for load: one write per second per key.
const RETRY_AFTER_MS: [u64; 2] = [1000, 1000];

/// A store whose writes refused for load are tried again, after [`RETRY_AFTER_MS`]. Without a
/// timer (`sleep` is `None`) nothing is retried.
pub struct Retrying<S> {
    pub inner: S,
    pub sleep: Option<Sleep>,
    /// Requests sent to the store, every try counted: what a step of garbage collection
    /// reports and keeps within its budget (each one is billed, and counts against the
    /// invocation's subrequests).
    operations: Cell<u64>,
}

impl<S> Retrying<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, sleep: None, operations: Cell::new(0) }
    }

    /// Requests sent so far.
    pub fn operations(&self) -> u64 {
        self.operations.get()
    }

    fn count(&self) {
        self.operations.set(self.operations.get() + 1);
    }

    /// Runs `attempt` until it is not refused for load, or the retries are spent.
    async fn retried<T, F: Future<Output = Result<T>>>(&self, attempt: impl Fn() -> F) -> Result<T> {
        let mut waits = RETRY_AFTER_MS.iter();
        loop {
            self.count();
            match attempt().await {
                Err(e) if e.rate_limited => match (&self.sleep, waits.next()) {
                    (Some(sleep), Some(&ms)) => sleep(ms).await,
                    _ => return Err(e),
                },
                done => return done,
            }
        }
    }
}

impl<O: ObjectStore> ObjectStore for Retrying<O> {
    type Body = O::Body;
    type Upload = O::Upload;

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.count();
        self.inner.head(key).await
    }
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<(ObjectMeta, Self::Body)>> {
        self.count();
        self.inner.get(key, range).await
    }
    async fn get_bytes(&self, key: &str) -> Result<Option<(ObjectMeta, Vec<u8>)>> {
        self.count();
        self.inner.get_bytes(key).await
    }
    async fn read_range(&self, key: &str, range: ByteRange) -> Result<Option<Vec<u8>>> {
        self.count();
        self.inner.read_range(key, range).await
    }
    async fn put(&self, key: &str, bytes: Vec<u8>, options: PutOptions) -> Result<Option<ObjectMeta>> {
        self.retried(|| self.inner.put(key, bytes.clone(), options.clone())).await
    }
    /// Not retried: the body is spent.
    async fn put_verified(
        &self,
        key: &str,
        body: Self::Upload,
        length: u64,
        digest: &Digest,
        options: PutOptions,
    ) -> Result<bool> {
        self.count();
        self.inner.put_verified(key, body, length, digest, options).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.retried(|| self.inner.delete(key)).await
    }
    async fn list(&self, prefix: &str, from: ListFrom<'_>, limit: u32) -> Result<ObjectPage> {
        self.count();
        self.inner.list(prefix, from, limit).await
    }
    async fn create_multipart(&self, key: &str, options: PutOptions) -> Result<String> {
        self.retried(|| self.inner.create_multipart(key, options.clone())).await
    }
    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Vec<u8>) -> Result<Part> {
        self.retried(|| self.inner.upload_part(key, upload_id, number, bytes.clone())).await
    }
    /// Not retried: the source is spent.
    async fn upload_part_streamed<P: PartSource>(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        length: u64,
        source: &mut P,
    ) -> Result<Part> {
        self.count();
        self.inner.upload_part_streamed(key, upload_id, number, length, source).await
    }
    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[Part]) -> Result<ObjectMeta> {
        self.retried(|| self.inner.complete_multipart(key, upload_id, parts)).await
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        self.retried(|| self.inner.abort_multipart(key, upload_id)).await
    }
}

impl<K: KeyValueStore> KeyValueStore for Retrying<K> {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>> {
        self.count();
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: &str, metadata: Option<&serde_json::Value>) -> Result<()> {
        self.retried(|| self.inner.put(key, value, metadata)).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.retried(|| self.inner.delete(key)).await
    }
    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<KvPage> {
        self.count();
        self.inner.list(prefix, cursor, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::{MemoryKv, MemoryObjects, Platform};
    use futures_executor::block_on;
    use std::cell::Cell;

    /// A store on the platform model whose timer moves the model's clock.
    fn on_platform() -> (Retrying<MemoryObjects>, Retrying<MemoryKv>, Rc<Cell<u64>>) {
        let now = Rc::new(Cell::new(1_000));
        let platform = Platform::new(now.clone(), 10_000);
        let clock = now.clone();
        let sleep: Sleep = Rc::new(move |ms| {
            clock.set(clock.get() + ms.div_ceil(1000));
            Box::pin(async {})
        });
        let mut objects = Retrying::new(MemoryObjects::new().on_platform(&platform));
        objects.sleep = Some(sleep.clone());
        let mut kv = Retrying::new(MemoryKv::new().at_location(&platform));
        kv.sleep = Some(sleep);
        (objects, kv, now)
    }

    #[test]
    fn a_second_write_to_a_key_within_a_second_waits_and_goes_through() {
        let (objects, kv, now) = on_platform();
        let start = now.get();
        block_on(async {
            objects.put("k", b"1".to_vec(), PutOptions::default()).await.unwrap();
            objects.put("k", b"2".to_vec(), PutOptions::default()).await.unwrap();
            objects.delete("k").await.unwrap();
            kv.put("k", "1", None).await.unwrap();
            kv.put("k", "2", None).await.unwrap();
        });
        assert_eq!(now.get(), start + 3, "each refused write waited a second");
        assert_eq!(block_on(objects.get_bytes("k")).unwrap(), None);
        assert_eq!(block_on(kv.get("k")).unwrap().unwrap().value, "2");
    }

    #[test]
    fn without_a_timer_the_refusal_reaches_the_caller() {
        let (mut objects, _, _) = on_platform();
        objects.sleep = None;
        block_on(objects.put("k", Vec::new(), PutOptions::default())).unwrap();
        let refused = block_on(objects.put("k", Vec::new(), PutOptions::default())).unwrap_err();
        assert!(refused.rate_limited, "{refused}");
    }
}
