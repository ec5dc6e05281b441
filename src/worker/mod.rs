//! The Workers glue, compiled only for wasm32: the fetch and scheduled events, configuration
//! from the environment, and the R2, KV, Cache API and fetch implementations of the core's
//! contracts, on workers-rs (the `worker` crate). Nothing here makes a protocol decision.
//!
//! What workers-rs does not wrap (workerd's `readAtLeast`, stream tees into a
//! `FixedLengthStream`, WebCrypto signature checks) is in [`ext`], reached through the crates
//! workers-rs is built on. `src/entry.mjs` is the JavaScript module that loads this wasm.

mod ext;

use crate::base::error::RegistryError;
use crate::base::http::{self, Body, BodyReader, Headers, Method};
use crate::base::names::{Algorithm, Digest};
use crate::config::GcMode;
use crate::ops::notify::Outcome;
use crate::registry::host::{Delivery, Notifier, StepQueue, Upstream, UpstreamRequest, UpstreamResponse};
use crate::storage::keys;
use crate::storage::memo::Memo;
use crate::storage::{
    self, ByteRange, KeyValueStore, KvEntry, KvKey, KvPage, ListFrom, Metadata, ObjectMeta, ObjectPage, ObjectStore,
    Part, PartSource, PutOptions, StorageError,
};
use crate::{Config, Registry};
use ::worker::js_sys::{BigInt, Uint8Array};
use ::worker::wasm_bindgen_futures::JsFuture;
use ::worker::web_sys::{self, ReadableStream};
use ::worker::worker_sys::FixedLengthStream;
use ::worker::{
    Bucket, Cache, Conditional, Context, Data, Date, Delay, Env, Fetch, HttpMetadata, Include, KvStore, MessageBatch,
    MessageExt, Object, Queue, QueueRetryOptionsBuilder, Range, Request, RequestInit, RequestRedirect, Response,
    ResponseBody, ScheduleContext, ScheduledEvent, UploadedPart, console_error, console_log, event,
};
use ext::{BodyStream, js_error};
use futures_util::future::LocalBoxFuture;
use serde_json::Value;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// A binding's error as a storage error. R2's 10058 ("Reduce your concurrent request rate for
/// the same object") and KV's 429 are refusals for load: retried (`storage::retry`), then
/// answered 429 TOOMANYREQUESTS rather than 500.
fn se(e: impl std::fmt::Display) -> StorageError {
    let message = e.to_string();
    match message.contains("(10058)") || message.contains("429") {
        true => StorageError::rate_limited(message),
        false => StorageError::new(message),
    }
}

/// The R2 bucket bound as `BUCKET`, with the location's cache in front of the objects that
/// never change.
struct R2 {
    bucket: Bucket,
    cache: Option<EdgeCache>,
}

/// The Cache API (`caches.default`) in front of R2 for blob bytes (`keys::edge_cacheable`):
/// after the first read in a location they are served from its cache, ranged reads included.
/// A miss is answered from R2 while a second R2 read fills the cache after the response: a tee
/// of one read would buffer whatever the slower of client and cache had not taken yet, up to
/// the whole blob, in the isolate's 128 MB. Deleting an object purges it here; other locations
/// keep theirs until evicted, which is harmless because a blob is only reached through its
/// repository's link. The Cache API only works on a custom domain (on workers.dev it does
/// nothing) and locally (`npm start`, `wrangler dev`).
struct EdgeCache {
    cache: Cache,
    /// Keys live under the Worker's own origin, the Cache API being per zone. A client asking
    /// for such a URL itself reaches the Worker (which runs before the cache) and gets a 404.
    origin: String,
    ctx: Rc<Context>,
}

/// The largest object the Cache API keeps.
const EDGE_CACHE_MAX: u64 = 512 * 1024 * 1024;

impl EdgeCache {
    fn url(&self, key: &str) -> String {
        format!("{}/_wharf/cache/{key}", self.origin)
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Option<(ObjectMeta, ReadableStream)> {
        let headers = ::worker::Headers::new();
        if let Some(r) = range {
            headers.set("Range", &format!("bytes={}-{}", r.offset, r.offset + r.length - 1)).ok()?;
        }
        let mut init = RequestInit::new();
        init.with_headers(headers);
        let request = Request::new_with_init(&self.url(key), &init).ok()?;
        let response = self.cache.get(&request, false).await.ok()??;
        // Only what was asked: a cache that ignored the Range would send the whole object.
        if response.status_code() != if range.is_some() { 206 } else { 200 } {
            return None;
        }
        let header = |name: &str| response.headers().get(name).ok().flatten();
        // A ranged answer names the whole size after the slash of its Content-Range.
        let size = header("content-range")
            .and_then(|r| r.rsplit_once('/').and_then(|(_, total)| total.parse().ok()))
            .or_else(|| header("content-length").and_then(|l| l.parse().ok()))?;
        let meta = ObjectMeta {
            key: key.to_owned(),
            size,
            etag: header("etag").unwrap_or_default(),
            content_type: header("content-type"),
            custom: Metadata::new(),
            uploaded_ms: 0,
        };
        match response.body() {
            ResponseBody::Stream(s) => Some((meta, s.clone())),
            _ => None,
        }
    }

    /// Reads the object from R2 again after the response (`waitUntil`) and stores it, with its
    /// length (so that ranged reads can be answered from it).
    fn fill(&self, bucket: &Bucket, meta: &ObjectMeta) {
        let headers = ::worker::Headers::new();
        let set = |name: &str, value: &str| {
            let _ = headers.set(name, value);
        };
        set("Cache-Control", "public, max-age=31536000, immutable");
        set("Content-Length", &meta.size.to_string());
        set("ETag", &meta.etag);
        if let Some(t) = &meta.content_type {
            set("Content-Type", t);
        }
        let (bucket, key, url) = (bucket.clone(), meta.key.clone(), self.url(&meta.key));
        self.ctx.wait_until(async move {
            let stored = async {
                let Some(object) = bucket.get(&key).execute().await? else { return Ok(()) };
                let Some(body) = object.body() else { return Ok(()) };
                let response = Response::from_body(body.response_body()?)?.with_headers(headers);
                Cache::default().put(url, response).await
            };
            if let Err(e) = stored.await {
                console_error!("edge cache: {e}");
            }
        });
    }
}

fn meta(o: &Object) -> storage::Result<ObjectMeta> {
    Ok(ObjectMeta {
        key: o.key(),
        size: o.size(),
        etag: o.etag(),
        content_type: o.http_metadata().content_type,
        custom: o.custom_metadata().map_err(se)?.into_iter().collect(),
        uploaded_ms: o.uploaded().as_millis(),
    })
}

fn http_metadata(content_type: Option<String>) -> HttpMetadata {
    HttpMetadata { content_type, ..Default::default() }
}

/// R2 custom metadata as workers-rs takes it.
fn custom(metadata: &Metadata) -> HashMap<String, String> {
    metadata.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
}

fn offset_range(r: ByteRange) -> Range {
    Range::OffsetWithLength { offset: r.offset, length: r.length }
}

fn part(uploaded: &UploadedPart) -> Part {
    Part { number: uploaded.part_number(), etag: uploaded.etag() }
}

impl R2 {
    /// The object, or the range of it, straight from R2.
    async fn object(&self, key: &str, range: Option<ByteRange>) -> storage::Result<Option<Object>> {
        let mut get = self.bucket.get(key);
        if let Some(r) = range {
            get = get.range(offset_range(r));
        }
        get.execute().await.map_err(se)
    }

    async fn read(&self, key: &str, range: Option<ByteRange>) -> storage::Result<Option<(Object, Vec<u8>)>> {
        let Some(object) = self.object(key, range).await? else { return Ok(None) };
        let bytes = match object.body() {
            Some(body) => body.bytes().await.map_err(se)?,
            None => Vec::new(),
        };
        Ok(Some((object, bytes)))
    }

    fn multipart(&self, key: &str, upload_id: &str) -> storage::Result<::worker::MultipartUpload> {
        self.bucket.resume_multipart_upload(key, upload_id).map_err(se)
    }
}

impl ObjectStore for R2 {
    /// R2's body stream, handed to the Response as is: the bytes never enter wasm.
    type Body = ReadableStream;
    /// The client's request body stream, handed to R2 as is.
    type Upload = ReadableStream;

    async fn put_verified(
        &self,
        key: &str,
        body: ReadableStream,
        _length: u64, // R2 takes it from the request stream, whose length workerd knows
        digest: &Digest,
        options: PutOptions,
    ) -> storage::Result<bool> {
        // R2 checks the bytes against the digest before the object appears.
        let hash = hex::decode(digest.hex()).map_err(se)?;
        let put = self
            .bucket
            .put(key, Data::ReadableStream(body))
            .http_metadata(http_metadata(options.content_type))
            .custom_metadata(custom(&options.custom));
        let put = match digest.algorithm() {
            Algorithm::Sha256 => put.sha256(hash),
            Algorithm::Sha512 => put.sha512(hash),
        };
        match put.execute().await {
            Ok(_) => Ok(true),
            Err(e) if is_checksum_mismatch(&e.to_string()) => Ok(false),
            // The request stream R2 was reading broke off: nothing was written.
            Err(e) if is_body_lost(&e.to_string()) => Err(StorageError::body_broken(e.to_string())),
            Err(e) => Err(se(e)),
        }
    }

    async fn head(&self, key: &str) -> storage::Result<Option<ObjectMeta>> {
        self.bucket.head(key).await.map_err(se)?.as_ref().map(meta).transpose()
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> storage::Result<Option<(ObjectMeta, ReadableStream)>> {
        let cache = self.cache.as_ref().filter(|_| keys::edge_cacheable(key));
        if let Some(cache) = cache
            && let Some(hit) = cache.get(key, range).await
        {
            return Ok(Some(hit));
        }
        let Some(object) = self.object(key, range).await? else { return Ok(None) };
        let body = match object.body().map(|b| b.response_body()) {
            Some(Ok(ResponseBody::Stream(s))) => s,
            _ => return Err(se("R2 object without a body stream")),
        };
        let meta = meta(&object)?;
        // Kept by the location's cache for the next reader.
        if let Some(cache) = cache.filter(|_| meta.size > 0 && meta.size <= EDGE_CACHE_MAX) {
            cache.fill(&self.bucket, &meta);
        }
        Ok(Some((meta, body)))
    }

    async fn get_bytes(&self, key: &str) -> storage::Result<Option<(ObjectMeta, Vec<u8>)>> {
        match self.read(key, None).await? {
            Some((object, bytes)) => Ok(Some((meta(&object)?, bytes))),
            None => Ok(None),
        }
    }

    async fn read_range(&self, key: &str, range: ByteRange) -> storage::Result<Option<Vec<u8>>> {
        Ok(self.read(key, Some(range)).await?.map(|(_, bytes)| bytes))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, options: PutOptions) -> storage::Result<Option<ObjectMeta>> {
        let mut put = self
            .bucket
            .put(key, Data::Bytes(bytes))
            .http_metadata(http_metadata(options.content_type))
            .custom_metadata(custom(&options.custom));
        if let Some(etag) = options.if_etag_matches {
            put = put.only_if(Conditional { etag_matches: Some(etag), ..Default::default() });
        }
        put.execute().await.map_err(se)?.as_ref().map(meta).transpose()
    }

    async fn delete(&self, key: &str) -> storage::Result<()> {
        if let Some(cache) = self.cache.as_ref().filter(|_| keys::edge_cacheable(key)) {
            cache.cache.delete(cache.url(key), false).await.map_err(se)?;
        }
        self.bucket.delete(key).await.map_err(se)
    }

    async fn list(&self, prefix: &str, from: ListFrom<'_>, limit: u32) -> storage::Result<ObjectPage> {
        let mut list = self
            .bucket
            .list()
            .prefix(prefix)
            .limit(limit)
            .include(vec![Include::HttpMetadata, Include::CustomMetadata]);
        match from {
            ListFrom::Beginning => {}
            ListFrom::Cursor(c) => list = list.cursor(c),
            ListFrom::After(k) => list = list.start_after(k),
        }
        let page = list.execute().await.map_err(se)?;
        let objects = page.objects().iter().map(meta).collect::<storage::Result<_>>()?;
        Ok(ObjectPage { objects, cursor: if page.truncated() { page.cursor() } else { None } })
    }

    async fn create_multipart(&self, key: &str, options: PutOptions) -> storage::Result<String> {
        let create = self
            .bucket
            .create_multipart_upload(key)
            .http_metadata(http_metadata(options.content_type))
            .custom_metadata(custom(&options.custom));
        Ok(create.execute().await.map_err(se)?.upload_id().await)
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Vec<u8>) -> storage::Result<Part> {
        let uploaded = self.multipart(key, upload_id)?.upload_part(number, Data::Bytes(bytes)).await.map_err(se)?;
        Ok(part(&uploaded))
    }

    /// The part's bytes go through a FixedLengthStream (R2 takes a stream of known length): each
    /// write resolves once R2 has taken the bytes, so at most one read's worth waits in memory.
    async fn upload_part_streamed<S: PartSource>(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        length: u64,
        source: &mut S,
    ) -> storage::Result<Part> {
        let upload = self.multipart(key, upload_id)?;
        let stream = FixedLengthStream::new_big_int(BigInt::from(length)).map_err(|e| se(js_error(e)))?;
        let writer = stream.writable().get_writer().map_err(|e| se(js_error(e)))?;
        // Rejected when either side fails; each failure is reported where it is awaited.
        ext::ignore(writer.closed());
        // Whichever side fails first aborts the stream, so that the other one ends too.
        let uploading = async {
            let uploaded = upload.upload_part(number, Data::ReadableStream(stream.readable())).await;
            if uploaded.is_err() {
                ext::ignore(writer.abort());
            }
            uploaded.map_err(se)
        };
        let feeding = async {
            let mut sent = 0;
            while sent < length
                && let Some(bytes) = source.next().await
            {
                sent += bytes.len() as u64;
                let written = JsFuture::from(writer.write_with_chunk(&Uint8Array::from(&bytes[..]))).await;
                written.map_err(|e| se(js_error(e)))?;
            }
            if sent != length {
                ext::ignore(writer.abort());
                return Err(se(format!("part of {sent} bytes, {length} announced")));
            }
            JsFuture::from(writer.close()).await.map(drop).map_err(|e| se(js_error(e)))
        };
        let (uploaded, fed) = futures_util::future::join(uploading, feeding).await;
        // R2's own failure first: the feeding side then only saw its stream aborted.
        let uploaded = uploaded?;
        fed?;
        Ok(part(&uploaded))
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[Part]) -> storage::Result<ObjectMeta> {
        let parts = parts.iter().map(|p| UploadedPart::new(p.number, p.etag.clone()));
        let object = self.multipart(key, upload_id)?.complete(parts).await.map_err(se)?;
        meta(&object)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> storage::Result<()> {
        self.multipart(key, upload_id)?.abort().await.map_err(se)
    }
}

/// The KV namespace bound as `TAGS`.
struct Kv(KvStore);

impl KeyValueStore for Kv {
    async fn get(&self, key: &str) -> storage::Result<Option<KvEntry>> {
        let (value, metadata) = self.0.get(key).text_with_metadata::<Value>().await.map_err(se)?;
        Ok(value.map(|value| KvEntry { value, metadata }))
    }

    async fn put(&self, key: &str, value: &str, metadata: Option<&Value>) -> storage::Result<()> {
        let mut put = self.0.put(key, value).map_err(se)?;
        if let Some(m) = metadata {
            put = put.metadata(m).map_err(se)?;
        }
        put.execute().await.map_err(se)
    }

    async fn delete(&self, key: &str) -> storage::Result<()> {
        self.0.delete(key).await.map_err(se)
    }

    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> storage::Result<KvPage> {
        let mut list = self.0.list().prefix(prefix.to_owned()).limit(limit.into());
        if let Some(c) = cursor {
            list = list.cursor(c.to_owned());
        }
        let page = list.execute().await.map_err(se)?;
        let keys = page.keys.into_iter().map(|k| KvKey { name: k.name, metadata: k.metadata }).collect();
        Ok(KvPage { keys, cursor: if page.list_complete { None } else { page.cursor.filter(|c| !c.is_empty()) } })
    }
}

/// The request body: the client's stream, handed whole to R2 (`take_raw`) or read in large
/// pieces as it arrives.
struct RequestBody {
    raw: Option<ReadableStream>,
    reading: Option<BodyStream>,
}

impl BodyReader for RequestBody {
    type Raw = ReadableStream;

    async fn chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        if let Some(raw) = self.raw.take() {
            self.reading = Some(BodyStream::start(raw)?);
        }
        match &mut self.reading {
            None => Ok(None),
            Some(reading) => reading.next().await,
        }
    }

    fn take_raw(&mut self) -> Option<ReadableStream> {
        self.raw.take()
    }
}

/// Sends a request with the Fetch API; redirects come back to the caller.
async fn send(
    url: &str,
    method: ::worker::Method,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Response, String> {
    let h = ::worker::Headers::new();
    for (name, value) in headers {
        h.append(name, value).map_err(|e| e.to_string())?;
    }
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(h).with_redirect(RequestRedirect::Manual);
    if let Some(body) = body {
        init.with_body(Some(Uint8Array::from(&body[..]).into()));
    }
    let request = Request::new_with_init(url, &init).map_err(|e| e.to_string())?;
    Fetch::Request(request).send().await.map_err(|e| e.to_string())
}

/// Sends notifications with the Fetch API.
/// Notifications sent with the Fetch API; handed to the queue bound as `NOTIFY` when there is
/// one (see `ops::notify`).
struct Poster {
    queue: Option<Queue>,
}

impl Notifier for Poster {
    fn post(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> LocalBoxFuture<'_, Result<u16, String>> {
        let url = url.to_owned();
        Box::pin(async move {
            let headers: Vec<_> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            Ok(send(&url, ::worker::Method::Post, &headers, Some(body)).await?.status_code())
        })
    }

    fn sleep(&self, ms: u64) -> LocalBoxFuture<'_, ()> {
        Box::pin(Delay::from(Duration::from_millis(ms)))
    }

    fn enqueue(&self, deliveries: Vec<Delivery>) -> Option<LocalBoxFuture<'_, Result<(), String>>> {
        let queue = self.queue.as_ref()?;
        Some(Box::pin(async move { queue.send_batch(deliveries).await.map_err(|e| e.to_string()) }))
    }
}

/// Garbage collection steps sent to the queue bound as `GC` (see `gc`).
struct GcSteps {
    queue: Queue,
}

/// A message of the `GC` queue: run the next step of this run.
#[derive(serde::Serialize, serde::Deserialize)]
struct GcStep {
    run: String,
}

impl StepQueue for GcSteps {
    fn send(&self, run: &str) -> LocalBoxFuture<'_, Result<(), String>> {
        let message = GcStep { run: run.to_owned() };
        Box::pin(async move { self.queue.send(message).await.map_err(|e| e.to_string()) })
    }
}

/// The consumers of both queues, told apart by the queue's name: `GC` (its name ends in `-gc`)
/// and `NOTIFY`.
#[event(queue)]
async fn queue(batch: MessageBatch<serde_json::Value>, env: Env, _ctx: Context) -> ::worker::Result<()> {
    let registry = registry(&env, None).map_err(|e| ::worker::Error::RustError(e.message().to_owned()))?;
    match batch.queue().ends_with("-gc") {
        true => gc_steps(&registry, batch).await,
        false => deliveries(&registry, batch).await,
    }
    Ok(())
}

/// One step per message, retried a minute later when it fails (a step that fails changed
/// nothing it cannot do again).
async fn gc_steps(registry: &Registry<R2, Kv>, batch: MessageBatch<serde_json::Value>) {
    for message in batch.messages().unwrap_or_default() {
        let Ok(step) = serde_json::from_value::<GcStep>(message.body().clone()) else {
            console_error!("gc: a queued step that cannot be read, dropped");
            message.ack();
            continue;
        };
        match registry.run_queued_gc_step(&step.run).await {
            Ok(()) => message.ack(),
            Err(e) => {
                console_error!("gc step failed: {}", e.message());
                message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(60).build());
            }
        }
    }
}

/// The consumer of the `NOTIFY` queue: one try of each delivery, acknowledged once delivered,
/// else retried after the wait `Registry::deliver_queued` says (the queue moves a delivery
/// that used all its tries to its dead-letter queue).
async fn deliveries(registry: &Registry<R2, Kv>, batch: MessageBatch<serde_json::Value>) {
    let now = Date::now().as_millis();
    for message in batch.messages().unwrap_or_default() {
        let delivery = match serde_json::from_value::<Delivery>(message.body().clone()) {
            Ok(d) => d,
            Err(e) => {
                console_error!("notifications: a queued delivery that cannot be read, dropped: {e}");
                message.ack();
                continue;
            }
        };
        let age_secs = now.saturating_sub(message.timestamp().as_millis()) / 1000;
        match registry.deliver_queued(&delivery, age_secs).await {
            Outcome::Delivered => message.ack(),
            Outcome::RetryAfter(secs) => {
                message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(secs).build())
            }
        }
    }
}

/// The upstream of a pull-through cache, reached with the Fetch API.
struct Fetcher;

impl Upstream<R2> for Fetcher {
    fn fetch(&self, request: UpstreamRequest) -> LocalBoxFuture<'_, Result<UpstreamResponse<ReadableStream>, String>> {
        Box::pin(async move {
            let method = if request.method == Method::Head { ::worker::Method::Head } else { ::worker::Method::Get };
            let headers: Vec<_> = request.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            // Redirects come back to the core, which follows them without credentials.
            let response = send(&request.url, method, &headers, None).await?;
            let mut out = Headers::new();
            for (name, value) in response.headers().entries() {
                out.append(&name, &value);
            }
            let body = match response.body() {
                ResponseBody::Stream(s) => Some(s.clone()),
                _ => None,
            };
            Ok(UpstreamResponse { status: response.status_code(), headers: out, body })
        })
    }

    fn read(&self, body: ReadableStream, limit: usize) -> LocalBoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let mut reading = BodyStream::start(body)?;
            let mut out = Vec::new();
            while let Some(chunk) = reading.next().await? {
                if out.len() + chunk.len() > limit {
                    return Err(format!("more than {limit} bytes"));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(out)
        })
    }

    fn tee(&self, body: ReadableStream, length: u64) -> Result<(ReadableStream, ReadableStream), String> {
        ext::tee_fixed(body, length).map_err(js_error)
    }

    fn pass(&self, body: ReadableStream) -> ReadableStream {
        body
    }
}

/// R2's answer to a put whose checksum did not match the bytes (production: code 10037;
/// Miniflare: the same sentence).
fn is_checksum_mismatch(error: &str) -> bool {
    error.contains("10037") || error.contains("checksum you specified did not match")
}

/// workerd's error for a request body whose client went away or stopped short of its
/// Content-Length, as a read of the stream (or R2 reading it) reports it.
fn is_body_lost(error: &str) -> bool {
    error.contains("Network connection lost")
}

thread_local! {
    /// The isolate's memo of hot tags and manifests, kept across requests.
    static MEMO: OnceCell<Rc<Memo>> = const { OnceCell::new() };
    /// The isolate's configuration, parsed from its variables on the first request.
    static CONFIG: OnceCell<Rc<Config>> = const { OnceCell::new() };
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// The registry over this Worker's bindings and variables. A configuration error is logged
/// and reported as the message of an internal error.
fn registry(env: &Env, cache: Option<EdgeCache>) -> Result<Registry<R2, Kv>, RegistryError> {
    // Variables and secrets alike (users and the token key are secrets). They are fixed for an
    // isolate's life (a change deploys a new one), so they are parsed once: not on every pull.
    let config = match CONFIG.with(|c| c.get().cloned()) {
        Some(config) => config,
        None => {
            let config = Rc::new(
                Config::from_vars(&|name| {
                    env.var(name).ok().map(|v| v.to_string()).or_else(|| env.secret(name).ok().map(|s| s.to_string()))
                })
                .map_err(|e| RegistryError::internal(format!("configuration: {e}")))?,
            );
            // Once per isolate too: how many log lines (their sink is set at start).
            crate::base::log::set_level(config.log_level);
            CONFIG.with(|c| c.get_or_init(|| config.clone()).clone())
        }
    };
    let bucket = env.bucket("BUCKET").map_err(|e| RegistryError::internal(format!("binding BUCKET: {e}")))?;
    let kv = env.kv("TAGS").map_err(|e| RegistryError::internal(format!("binding TAGS: {e}")))?;
    let pull_through = config.upstream.is_some();
    let discovering = config.auth.as_ref().is_some_and(|a| a.oidc.0.iter().any(|i| i.keys.is_none()));
    let notifying = config.notify.is_some();
    let memo = MEMO.with(|m| m.get_or_init(|| Rc::new(Memo::new(config.tag_memo_secs))).clone());
    let mut registry = Registry::new(R2 { bucket, cache }, Kv(kv), config, Box::new(now_ms)).with_memo(memo);
    if pull_through {
        registry = registry.with_upstream(Box::new(Fetcher));
    }
    if discovering {
        registry = registry.with_oidc_discovery(Box::new(Fetcher));
    }
    if let Ok(queue) = env.queue("GC") {
        registry = registry.with_gc_steps(Box::new(GcSteps { queue }));
    }
    if notifying {
        registry = registry.with_notifier(Box::new(Poster { queue: env.queue("NOTIFY").ok() }));
    }
    Ok(registry
        .with_sleep(Rc::new(|ms| Box::pin(Delay::from(Duration::from_millis(ms)))))
        .with_signature_check(Box::new(|alg, jwk, data, signature| {
            Box::pin(async move { ext::webcrypto_verify(&alg, &jwk, &data, &signature).await.map_err(js_error) })
        }))
        .with_password_derivation(Box::new(|password, salt, iterations| {
            Box::pin(async move { ext::pbkdf2_sha256(&password, &salt, iterations).await.map_err(js_error) })
        })))
}

/// Once per isolate, when the wasm is instantiated (and again for the fresh instance that
/// `src/entry.mjs` starts after a trap): a panic's message and location go to `console.error`,
/// which `wrangler tail` and Workers Logs show, before the trap; and log lines go to the
/// console from the first one on, so that a configuration error is logged too.
#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
    crate::base::log::set_sink(|line| match line.starts_with(r#"{"level":"error""#) {
        true => console_error!("{line}"),
        false => console_log!("{line}"),
    });
}

/// The request and response as web-sys binds them, which workers-rs's `#[event(fetch)]` takes
/// as well as its own types: each is read or built with the few runtime calls wharf needs (its
/// `worker::Request` would also read the method, URL and `cf` on every request, and its
/// `worker::Response` builds a fuller init object), which is measurable on pulls answered from
/// the isolate's memory.
#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> ::worker::Result<web_sys::Response> {
    let mut headers = Headers::new();
    for (name, value) in ::worker::Headers(req.headers()).entries() {
        headers.append(&name, &value);
    }
    let method = Method::parse(&req.method());
    let body = RequestBody { raw: req.body(), reading: None };
    let request = http::Request::from_url(method, &req.url(), headers, body);
    let ctx = Rc::new(ctx);
    let cache = EdgeCache { cache: Cache::default(), origin: request.origin.clone(), ctx: ctx.clone() };
    let registry = match registry(&env, Some(cache)) {
        Ok(r) => r,
        Err(e) => return to_worker(e.into()),
    };
    let response = registry.handle(request).await;
    // What is left for after the response (the pull-through cache storing what it served).
    if registry.has_background() {
        ctx.wait_until(async move { registry.run_background().await });
    }
    to_worker(response)
}

/// The cron trigger of wrangler.toml: abort upload sessions abandoned by their clients, copy
/// tags kept in KV alone into R2 (see `ops::migrate`), then, with `WHARF_GC`, collect garbage
/// (a dry run only logs its report).
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let Ok(registry) = registry(&env, None) else { return };
    let now = now_ms();
    match registry.clean_abandoned_uploads(now).await {
        Ok(0) => {}
        Ok(n) => console_log!("removed {n} abandoned upload sessions"),
        Err(e) => console_error!("upload cleanup failed: {e}"),
    }
    match registry.copy_kv_tags_to_r2().await {
        Ok((_, 0)) => {}
        Ok((done, n)) => console_log!("copied {n} tags from KV to R2{}", if done { "; all are there" } else { "" }),
        Err(e) => console_error!("copying tags from KV to R2 failed: {}", e.message()),
    }
    let dry_run = match registry.config.gc {
        GcMode::Off => return,
        GcMode::DryRun => true,
        GcMode::On => false,
    };
    match registry.tick_gc(dry_run).await {
        Ok(Some(run)) if run.done() => console_log!("gc: {}", run.report.to_json()),
        Ok(Some(run)) => console_log!("gc: run {} going on in the queue", run.id),
        Ok(None) => {}
        Err(e) => console_error!("gc failed: {}", e.message()),
    }
}

fn to_worker(response: http::Response<ReadableStream>) -> ::worker::Result<web_sys::Response> {
    let headers = ::worker::Headers::new();
    for (name, value) in &response.headers {
        headers.append(name, value)?;
    }
    let init = web_sys::ResponseInit::new();
    init.set_status(response.status);
    init.set_headers(&headers.0);
    Ok(match response.body {
        Body::Empty => web_sys::Response::new_with_opt_str_and_init(None, &init),
        Body::Bytes(b) => {
            web_sys::Response::new_with_opt_buffer_source_and_init(Some(&Uint8Array::from(&b[..])), &init)
        }
        Body::Stream(s) => web_sys::Response::new_with_opt_readable_stream_and_init(Some(&s), &init),
    }?)
}
