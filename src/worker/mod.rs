//! The Workers glue, compiled only for wasm32: the fetch and scheduled entry points,
//! configuration from the environment, and the R2 and KV implementations of the storage
//! contracts. Nothing here makes a protocol decision.
//!
//! It binds the few Workers APIs wharf uses directly with wasm-bindgen rather than through
//! workers-rs: that crate's typed wrappers (serde conversions of every option, its own
//! stream adapters, container and image types) cost about a third of the bundle's budget
//! (README, "Size"). `src/entry.mjs` is the JavaScript module that loads this wasm.

use crate::config::GcMode;
use crate::error::RegistryError;
use crate::http::{self, Body, BodyReader, Headers, Method};
use crate::json::Json;
use crate::memo::Memo;
use crate::names::Digest;
use crate::notify::Notifier;
use crate::proxy::{Upstream, UpstreamRequest, UpstreamResponse};
use crate::storage::{
    self, ByteRange, KeyValueStore, KvEntry, KvKey, KvPage, ListFrom, Metadata, ObjectMeta, ObjectPage, ObjectStore,
    Part, PartSource, PutOptions, StorageError,
};
use crate::{Config, Registry, keys};
use futures_util::future::LocalBoxFuture;
use js_sys::futures::JsFuture;
use js_sys::{Array, ArrayBuffer, BigInt, Function, JSON, Object as JsObject, Promise, Reflect, Uint8Array};
use std::cell::OnceCell;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// The Workers runtime's objects, bound as wharf uses them. Methods that can throw are
/// `catch`, so that a runtime error becomes an `Err`, never a trap.
#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn console_log(line: &str);
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(line: &str);
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &Function, ms: f64);
    #[wasm_bindgen(js_name = fetch, catch)]
    fn global_fetch(request: &JsRequest) -> Result<Promise, JsValue>;

    /// The `ctx` of an event: `waitUntil` keeps the isolate alive for work after the response.
    #[derive(Clone)]
    pub type Context;
    #[wasm_bindgen(method, js_name = waitUntil)]
    fn wait_until(this: &Context, promise: &Promise);

    #[wasm_bindgen(js_name = Request)]
    pub type JsRequest;
    #[wasm_bindgen(constructor, js_class = "Request", catch)]
    fn new(url: &str, init: &JsValue) -> Result<JsRequest, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn method(this: &JsRequest) -> String;
    #[wasm_bindgen(method, getter)]
    fn url(this: &JsRequest) -> String;
    #[wasm_bindgen(method, getter)]
    fn headers(this: &JsRequest) -> JsHeaders;
    #[wasm_bindgen(method, getter)]
    fn body(this: &JsRequest) -> Option<ReadableStream>;

    #[wasm_bindgen(js_name = Response)]
    pub type JsResponse;
    #[wasm_bindgen(constructor, js_class = "Response", catch)]
    fn new(body: &JsValue, init: &JsValue) -> Result<JsResponse, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn status(this: &JsResponse) -> u16;
    #[wasm_bindgen(method, getter)]
    fn headers(this: &JsResponse) -> JsHeaders;
    #[wasm_bindgen(method, getter)]
    fn body(this: &JsResponse) -> Option<ReadableStream>;

    #[wasm_bindgen(js_name = Headers)]
    type JsHeaders;
    #[wasm_bindgen(constructor, js_class = "Headers")]
    fn new() -> JsHeaders;
    /// Throws on a name or value the Fetch standard refuses.
    #[wasm_bindgen(method, catch)]
    fn append(this: &JsHeaders, name: &str, value: &str) -> Result<(), JsValue>;
    #[wasm_bindgen(method)]
    fn get(this: &JsHeaders, name: &str) -> Option<String>;

    #[derive(Clone)]
    pub type ReadableStream;
    #[wasm_bindgen(method, js_name = getReader, catch)]
    fn get_reader(this: &ReadableStream, options: &JsValue) -> Result<StreamReader, JsValue>;
    #[wasm_bindgen(method)]
    fn tee(this: &ReadableStream) -> Array;
    #[wasm_bindgen(method, js_name = pipeThrough, catch)]
    fn pipe_through(this: &ReadableStream, transform: &FixedLengthStream) -> Result<ReadableStream, JsValue>;

    /// A default reader, or a BYOB reader with workerd's `readAtLeast` extension.
    type StreamReader;
    #[wasm_bindgen(method)]
    fn read(this: &StreamReader) -> Promise;
    #[wasm_bindgen(method, js_name = readAtLeast)]
    fn read_at_least(this: &StreamReader, min_bytes: u32, view: Uint8Array) -> Promise;

    /// workerd's identity transform whose readable side has a known length (R2 and the Cache
    /// API want that of a stream).
    type FixedLengthStream;
    #[wasm_bindgen(constructor, catch)]
    fn new(length: BigInt) -> Result<FixedLengthStream, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn readable(this: &FixedLengthStream) -> ReadableStream;
    #[wasm_bindgen(method, getter)]
    fn writable(this: &FixedLengthStream) -> WritableStream;

    type WritableStream;
    #[wasm_bindgen(method, js_name = getWriter, catch)]
    fn get_writer(this: &WritableStream) -> Result<StreamWriter, JsValue>;
    type StreamWriter;
    #[wasm_bindgen(method)]
    fn write(this: &StreamWriter, chunk: &Uint8Array) -> Promise;
    #[wasm_bindgen(method)]
    fn close(this: &StreamWriter) -> Promise;
    #[wasm_bindgen(method)]
    fn abort(this: &StreamWriter) -> Promise;

    /// `caches.default`.
    #[derive(Clone)]
    type Cache;
    #[wasm_bindgen(method, js_name = match, catch)]
    fn lookup(this: &Cache, request: &JsRequest) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn put(this: &Cache, url: &str, response: &JsResponse) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn delete(this: &Cache, url: &str) -> Result<Promise, JsValue>;

    #[derive(Clone)]
    type Bucket;
    #[wasm_bindgen(method, catch)]
    fn head(this: &Bucket, key: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn get(this: &Bucket, key: &str, options: &JsValue) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn put(this: &Bucket, key: &str, value: &JsValue, options: &JsValue) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn delete(this: &Bucket, key: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn list(this: &Bucket, options: &JsValue) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, js_name = createMultipartUpload, catch)]
    fn create_multipart_upload(this: &Bucket, key: &str, options: &JsValue) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, js_name = resumeMultipartUpload, catch)]
    fn resume_multipart_upload(this: &Bucket, key: &str, upload_id: &str) -> Result<MultipartUpload, JsValue>;

    /// An R2Object (head, list, put) or R2ObjectBody (get).
    type R2Object;
    #[wasm_bindgen(method, getter)]
    fn key(this: &R2Object) -> String;
    #[wasm_bindgen(method, getter)]
    fn size(this: &R2Object) -> f64;
    #[wasm_bindgen(method, getter)]
    fn etag(this: &R2Object) -> String;
    #[wasm_bindgen(method, getter, js_name = httpMetadata)]
    fn http_metadata(this: &R2Object) -> JsValue;
    #[wasm_bindgen(method, getter, js_name = customMetadata)]
    fn custom_metadata(this: &R2Object) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn uploaded(this: &R2Object) -> js_sys::Date;
    #[wasm_bindgen(method, getter)]
    fn body(this: &R2Object) -> Option<ReadableStream>;
    #[wasm_bindgen(method, js_name = arrayBuffer)]
    fn array_buffer(this: &R2Object) -> Promise;

    type MultipartUpload;
    #[wasm_bindgen(method, getter, js_name = uploadId)]
    fn upload_id(this: &MultipartUpload) -> String;
    #[wasm_bindgen(method, js_name = uploadPart, catch)]
    fn upload_part(this: &MultipartUpload, number: u16, value: &JsValue) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn complete(this: &MultipartUpload, parts: &Array) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn abort(this: &MultipartUpload) -> Result<Promise, JsValue>;

    type KvNamespace;
    #[wasm_bindgen(method, js_name = getWithMetadata, catch)]
    fn get_with_metadata(this: &KvNamespace, key: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn put(this: &KvNamespace, key: &str, value: &str, options: &JsValue) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn delete(this: &KvNamespace, key: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn list(this: &KvNamespace, options: &JsValue) -> Result<Promise, JsValue>;
}

/// A JS exception's text: `Error: message` for an Error, else the thrown value as a string.
fn js_error(e: JsValue) -> String {
    match e.dyn_ref::<js_sys::Error>() {
        Some(error) => error.to_string().into(),
        None => e.as_string().unwrap_or_else(|| "a JavaScript value was thrown".to_owned()),
    }
}

fn js_se(e: JsValue) -> StorageError {
    StorageError::new(js_error(e))
}

/// Awaits a promise-returning call, its synchronous throw and its rejection alike.
async fn settle(call: Result<Promise, JsValue>) -> Result<JsValue, JsValue> {
    JsFuture::from(call?).await
}

async fn settle_se(call: Result<Promise, JsValue>) -> storage::Result<JsValue> {
    settle(call).await.map_err(js_se)
}

/// `value[name]`; undefined when absent.
fn field(value: &JsValue, name: &str) -> JsValue {
    Reflect::get(value, &name.into()).unwrap_or(JsValue::UNDEFINED)
}

/// A plain object built from (name, value) pairs, for the options the runtime takes.
fn js_object(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = JsObject::new();
    for (name, value) in pairs {
        // Setting a property of a fresh plain object cannot fail.
        let _ = Reflect::set(&o, &(*name).into(), value);
    }
    o.into()
}

fn js_headers(pairs: &[(&str, &str)]) -> Result<JsHeaders, JsValue> {
    let headers = JsHeaders::new();
    for (name, value) in pairs {
        headers.append(name, value)?;
    }
    Ok(headers)
}

/// A promise that resolves after `ms` milliseconds.
async fn sleep(ms: u64) {
    let promise = Promise::new(&mut |resolve, _| set_timeout(&resolve, ms as f64));
    let _ = JsFuture::from(promise).await;
}

/// A JS value as JSON, for the KV metadata the core keeps as [`Json`].
fn to_json(value: &JsValue) -> Option<Json> {
    if value.is_null() || value.is_undefined() {
        return None;
    }
    let text: String = JSON::stringify(value).ok()?.into();
    Json::parse(text.as_bytes()).ok()
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
/// nothing) and under `wrangler dev`.
struct EdgeCache {
    cache: Cache,
    /// Keys live under the Worker's own origin, the Cache API being per zone. A client asking
    /// for such a URL itself reaches the Worker (which runs before the cache) and gets a 404.
    origin: String,
    ctx: Context,
}

/// The largest object the Cache API keeps.
const EDGE_CACHE_MAX: u64 = 512 * 1024 * 1024;

impl EdgeCache {
    fn new(origin: String, ctx: Context) -> Option<Self> {
        let cache = field(&field(&js_sys::global(), "caches"), "default");
        (!cache.is_undefined()).then(|| EdgeCache { cache: cache.unchecked_into(), origin, ctx })
    }

    fn url(&self, key: &str) -> String {
        format!("{}/_wharf/cache/{key}", self.origin)
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Option<(ObjectMeta, ReadableStream)> {
        let range = range.map(|r| format!("bytes={}-{}", r.offset, r.offset + r.length - 1));
        let headers = js_headers(&range.as_deref().map(|r| ("Range", r)).into_iter().collect::<Vec<_>>()).ok()?;
        let request = JsRequest::new(&self.url(key), &js_object(&[("headers", headers.into())])).ok()?;
        let response = settle(self.cache.lookup(&request)).await.ok().filter(|r| !r.is_undefined())?;
        let response: JsResponse = response.unchecked_into();
        // Only what was asked: a cache that ignored the Range would send the whole object.
        if response.status() != if range.is_some() { 206 } else { 200 } {
            return None;
        }
        let headers = response.headers();
        // A ranged answer names the whole size after the slash of its Content-Range.
        let size = headers
            .get("content-range")
            .and_then(|r| r.rsplit_once('/').and_then(|(_, total)| total.parse().ok()))
            .or_else(|| headers.get("content-length").and_then(|l| l.parse().ok()))?;
        let meta = ObjectMeta {
            key: key.to_owned(),
            size,
            etag: headers.get("etag").unwrap_or_default(),
            content_type: headers.get("content-type"),
            custom: Metadata::new(),
            uploaded_ms: 0,
        };
        Some((meta, response.body()?))
    }

    /// Reads the object from R2 again after the response (`waitUntil`) and stores it, with its
    /// length (so that ranged reads can be answered from it).
    fn fill(&self, bucket: &Bucket, meta: &ObjectMeta) {
        let size = meta.size.to_string();
        let mut pairs = vec![
            ("Cache-Control", "public, max-age=31536000, immutable"),
            ("Content-Length", &size),
            ("ETag", &meta.etag),
        ];
        pairs.extend(meta.content_type.as_deref().map(|t| ("Content-Type", t)));
        let Ok(headers) = js_headers(&pairs) else { return };
        let (bucket, key, url, cache) = (bucket.clone(), meta.key.clone(), self.url(&meta.key), self.cache.clone());
        let filling = async move {
            let stored = async {
                let Some(object) = r2_object(settle(bucket.get(&key, &JsValue::UNDEFINED)).await?) else {
                    return Ok(());
                };
                let Some(body) = object.body() else { return Ok(()) };
                let response = JsResponse::new(&body, &js_object(&[("headers", headers.into())]))?;
                settle(cache.put(&url, &response)).await.map(drop)
            };
            if let Err(e) = stored.await {
                console_error(&format!("edge cache: {}", js_error(e)));
            }
            Ok(JsValue::UNDEFINED)
        };
        self.ctx.wait_until(&js_sys::futures::future_to_promise(filling));
    }
}

fn meta(o: &R2Object) -> ObjectMeta {
    ObjectMeta {
        key: o.key(),
        size: o.size() as u64,
        etag: o.etag(),
        content_type: field(&o.http_metadata(), "contentType").as_string(),
        custom: custom_metadata(&o.custom_metadata()),
        uploaded_ms: o.uploaded().get_time() as u64,
    }
}

/// An R2 call's object result: null when there is none (a missing key, a failed condition).
fn r2_object(value: JsValue) -> Option<R2Object> {
    (!value.is_null() && !value.is_undefined()).then(|| value.unchecked_into())
}

/// R2 custom metadata (an object of strings) as the core keeps it.
fn custom_metadata(value: &JsValue) -> Metadata {
    let Some(o) = value.dyn_ref::<JsObject>() else { return Metadata::new() };
    JsObject::entries(o)
        .iter()
        .filter_map(|pair| {
            let pair: Array = pair.unchecked_into();
            Some((pair.get(0).as_string()?, pair.get(1).as_string()?))
        })
        .collect()
}

/// R2's put and multipart options: content type, custom metadata and the condition, after
/// `extra`.
fn put_options(options: PutOptions, extra: &[(&str, JsValue)]) -> JsValue {
    let custom: Vec<(&str, JsValue)> = options.custom.iter().map(|(n, v)| (n.as_str(), v.into())).collect();
    let content_type: Vec<(&str, JsValue)> =
        options.content_type.map(|t| ("contentType", t.into())).into_iter().collect();
    let mut pairs = extra.to_vec();
    pairs.push(("httpMetadata", js_object(&content_type)));
    pairs.push(("customMetadata", js_object(&custom)));
    if let Some(etag) = options.if_etag_matches {
        pairs.push(("onlyIf", js_object(&[("etagMatches", etag.into())])));
    }
    js_object(&pairs)
}

fn range_option(range: ByteRange) -> JsValue {
    let range = js_object(&[("offset", (range.offset as f64).into()), ("length", (range.length as f64).into())]);
    js_object(&[("range", range)])
}

fn part(value: &JsValue) -> Part {
    Part {
        number: field(value, "partNumber").as_f64().unwrap_or(0.0) as u16,
        etag: field(value, "etag").as_string().unwrap_or_default(),
    }
}

impl R2 {
    fn upload(&self, key: &str, upload_id: &str) -> storage::Result<MultipartUpload> {
        self.bucket.resume_multipart_upload(key, upload_id).map_err(js_se)
    }

    async fn read(&self, key: &str, options: &JsValue) -> storage::Result<Option<(R2Object, Vec<u8>)>> {
        let Some(object) = r2_object(settle_se(self.bucket.get(key, options)).await?) else { return Ok(None) };
        let buffer = settle_se(Ok(object.array_buffer())).await?;
        let bytes = Uint8Array::new(&buffer).to_vec();
        Ok(Some((object, bytes)))
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
        // R2 checks the bytes against the digest (its hex form) before the object appears.
        let options = put_options(options, &[(digest.algorithm().as_str(), digest.hex().into())]);
        match settle(self.bucket.put(key, &body, &options)).await.map_err(js_error) {
            Ok(_) => Ok(true),
            Err(e) if is_checksum_mismatch(&e) => Ok(false),
            Err(e) => Err(StorageError::new(e)),
        }
    }

    async fn head(&self, key: &str) -> storage::Result<Option<ObjectMeta>> {
        Ok(r2_object(settle_se(self.bucket.head(key)).await?).as_ref().map(meta))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> storage::Result<Option<(ObjectMeta, ReadableStream)>> {
        let cache = self.cache.as_ref().filter(|_| keys::edge_cacheable(key));
        if let Some(cache) = cache
            && let Some(hit) = cache.get(key, range).await
        {
            return Ok(Some(hit));
        }
        let options = range.map(range_option).unwrap_or(JsValue::UNDEFINED);
        let Some(object) = r2_object(settle_se(self.bucket.get(key, &options)).await?) else {
            return Ok(None);
        };
        let body = object.body().ok_or_else(|| StorageError::new("R2 object without a body"))?;
        let meta = meta(&object);
        // Kept by the location's cache for the next reader.
        if let Some(cache) = cache.filter(|_| meta.size > 0 && meta.size <= EDGE_CACHE_MAX) {
            cache.fill(&self.bucket, &meta);
        }
        Ok(Some((meta, body)))
    }

    async fn get_bytes(&self, key: &str) -> storage::Result<Option<(ObjectMeta, Vec<u8>)>> {
        Ok(self.read(key, &JsValue::UNDEFINED).await?.map(|(object, bytes)| (meta(&object), bytes)))
    }

    async fn read_range(&self, key: &str, range: ByteRange) -> storage::Result<Option<Vec<u8>>> {
        Ok(self.read(key, &range_option(range)).await?.map(|(_, bytes)| bytes))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, options: PutOptions) -> storage::Result<Option<ObjectMeta>> {
        let body = Uint8Array::from(&bytes[..]);
        let put = self.bucket.put(key, &body, &put_options(options, &[]));
        Ok(r2_object(settle_se(put).await?).as_ref().map(meta))
    }

    async fn delete(&self, key: &str) -> storage::Result<()> {
        if let Some(cache) = self.cache.as_ref().filter(|_| keys::edge_cacheable(key)) {
            settle_se(cache.cache.delete(&cache.url(key))).await?;
        }
        settle_se(self.bucket.delete(key)).await.map(drop)
    }

    async fn list(&self, prefix: &str, from: ListFrom<'_>, limit: u32) -> storage::Result<ObjectPage> {
        let include = Array::of2(&"httpMetadata".into(), &"customMetadata".into());
        let mut options = vec![("prefix", prefix.into()), ("limit", limit.into()), ("include", include.into())];
        match from {
            ListFrom::Beginning => {}
            ListFrom::Cursor(c) => options.push(("cursor", c.into())),
            ListFrom::After(k) => options.push(("startAfter", k.into())),
        }
        let page = settle_se(self.bucket.list(&js_object(&options))).await?;
        let objects: Array = field(&page, "objects").unchecked_into();
        let objects = objects.iter().map(|o| meta(o.unchecked_ref())).collect();
        let truncated = field(&page, "truncated").is_truthy();
        Ok(ObjectPage { objects, cursor: if truncated { field(&page, "cursor").as_string() } else { None } })
    }

    async fn create_multipart(&self, key: &str, options: PutOptions) -> storage::Result<String> {
        let upload = settle_se(self.bucket.create_multipart_upload(key, &put_options(options, &[]))).await?;
        Ok(upload.unchecked_into::<MultipartUpload>().upload_id())
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Vec<u8>) -> storage::Result<Part> {
        let upload = self.upload(key, upload_id)?;
        let body = Uint8Array::from(&bytes[..]);
        Ok(part(&settle_se(upload.upload_part(number, &body)).await?))
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
        let upload = self.upload(key, upload_id)?;
        let stream = FixedLengthStream::new(BigInt::from(length)).map_err(js_se)?;
        let writer = stream.writable().get_writer().map_err(js_se)?;
        // Whichever side fails first aborts the stream, so that the other one ends too.
        let uploading = async {
            let part = settle_se(upload.upload_part(number, &stream.readable())).await;
            if part.is_err() {
                let _ = writer.abort();
            }
            part
        };
        let feeding = async {
            let mut sent = 0;
            while sent < length
                && let Some(bytes) = source.next().await
            {
                sent += bytes.len() as u64;
                JsFuture::from(writer.write(&Uint8Array::from(&bytes[..]))).await.map_err(js_se)?;
            }
            if sent != length {
                let _ = writer.abort();
                return Err(StorageError::new(format!("part of {sent} bytes, {length} announced")));
            }
            JsFuture::from(writer.close()).await.map_err(js_se)
        };
        let (uploaded, fed) = futures_util::future::join(uploading, feeding).await;
        // R2's own failure first: the feeding side then only saw its stream aborted.
        let uploaded = uploaded?;
        fed?;
        Ok(part(&uploaded))
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[Part]) -> storage::Result<ObjectMeta> {
        let upload = self.upload(key, upload_id)?;
        let parts: Array = parts
            .iter()
            .map(|p| js_object(&[("partNumber", p.number.into()), ("etag", p.etag.as_str().into())]))
            .collect();
        let object = r2_object(settle_se(upload.complete(&parts)).await?)
            .ok_or_else(|| StorageError::new("R2 completed a multipart upload without an object"))?;
        Ok(meta(&object))
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> storage::Result<()> {
        settle_se(self.upload(key, upload_id)?.abort()).await.map(drop)
    }
}

/// The KV namespace bound as `TAGS`.
struct Kv(KvNamespace);

impl KeyValueStore for Kv {
    async fn get(&self, key: &str) -> storage::Result<Option<KvEntry>> {
        let found = settle_se(self.0.get_with_metadata(key)).await?;
        Ok(field(&found, "value")
            .as_string()
            .map(|value| KvEntry { value, metadata: to_json(&field(&found, "metadata")) }))
    }

    /// KV takes about one write per second per key and answers 429 beyond: retried twice with
    /// backoff, then reported as rate-limited (the client gets 429 with Retry-After).
    async fn put(&self, key: &str, value: &str, metadata: Option<&Json>) -> storage::Result<()> {
        let metadata = match metadata {
            Some(m) => JSON::parse(&m.to_string()).map_err(js_se)?,
            None => JsValue::UNDEFINED,
        };
        let options = js_object(&[("metadata", metadata)]);
        let mut attempt = 0;
        loop {
            match settle(self.0.put(key, value, &options)).await.map_err(js_error) {
                Ok(_) => return Ok(()),
                Err(e) if e.contains("429") => {
                    attempt += 1;
                    if attempt > 2 {
                        return Err(StorageError::rate_limited(e));
                    }
                    sleep(500 * attempt).await;
                }
                Err(e) => return Err(StorageError::new(e)),
            }
        }
    }

    async fn delete(&self, key: &str) -> storage::Result<()> {
        settle_se(self.0.delete(key)).await.map(drop)
    }

    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> storage::Result<KvPage> {
        let mut options = vec![("prefix", prefix.into()), ("limit", limit.into())];
        options.extend(cursor.map(|c| ("cursor", c.into())));
        let page = settle_se(self.0.list(&js_object(&options))).await?;
        let keys: Array = field(&page, "keys").unchecked_into();
        let keys = keys
            .iter()
            .map(|k| KvKey {
                name: field(&k, "name").as_string().unwrap_or_default(),
                metadata: to_json(&field(&k, "metadata")),
            })
            .collect();
        let complete = field(&page, "list_complete").is_truthy();
        let cursor = field(&page, "cursor").as_string().filter(|c| !complete && !c.is_empty());
        Ok(KvPage { keys, cursor })
    }
}

/// Bytes asked of the client's stream per read. The default reader hands over whatever small
/// chunks the connection produced, one JS promise each (measured: ~14 MB/s); reading 1 MiB at
/// a time into one reused buffer is what makes chunked uploads keep up with R2.
const READ_SIZE: u32 = 1 << 20;

/// The request body: the client's stream, handed whole to R2 (`take_raw`) or read in large
/// pieces as it arrives.
struct RequestBody {
    raw: Option<ReadableStream>,
    reading: Option<Reading>,
}

struct Reading {
    reader: StreamReader,
    /// The BYOB reader's buffer, reused read after read; `None` for a default reader (a stream
    /// that is not a byte stream) and once the stream has ended.
    buffer: Option<ArrayBuffer>,
    byob: bool,
}

impl Reading {
    fn start(stream: ReadableStream) -> Result<Self, String> {
        // getReader({mode: "byob"}) throws, leaving the stream unlocked, when it is not a byte
        // stream; workerd's request bodies are.
        match stream.get_reader(&js_object(&[("mode", "byob".into())])) {
            Ok(reader) => Ok(Reading { reader, buffer: Some(ArrayBuffer::new(READ_SIZE)), byob: true }),
            Err(_) => {
                let reader = stream.get_reader(&JsValue::UNDEFINED).map_err(js_error)?;
                Ok(Reading { reader, buffer: None, byob: false })
            }
        }
    }

    async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        let read = match (self.byob, self.buffer.take()) {
            (true, None) => return Ok(None),
            (true, Some(buffer)) => self.reader.read_at_least(READ_SIZE, Uint8Array::new(&buffer)),
            (false, _) => self.reader.read(),
        };
        let result = JsFuture::from(read).await.map_err(|e| format!("reading the body: {}", js_error(e)))?;
        let done = field(&result, "done").is_truthy();
        let value = field(&result, "value");
        if value.is_undefined() {
            return Ok(None);
        }
        let value: Uint8Array = value.unchecked_into();
        let bytes = value.to_vec();
        if self.byob && !done {
            // The read transferred the buffer into `value`; read into it again.
            self.buffer = Some(value.buffer());
        }
        Ok(if bytes.is_empty() && done { None } else { Some(bytes) })
    }
}

impl BodyReader for RequestBody {
    type Raw = ReadableStream;

    async fn chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        if let Some(raw) = self.raw.take() {
            self.reading = Some(Reading::start(raw)?);
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
async fn send(url: &str, method: &str, headers: &[(&str, &str)], body: JsValue) -> Result<JsResponse, String> {
    let headers = js_headers(headers).map_err(js_error)?;
    let init = js_object(&[
        ("method", method.into()),
        ("headers", headers.into()),
        ("body", body),
        ("redirect", "manual".into()),
    ]);
    let request = JsRequest::new(url, &init).map_err(js_error)?;
    Ok(settle(global_fetch(&request)).await.map_err(js_error)?.unchecked_into())
}

/// Sends notifications with the Fetch API.
struct Poster;

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
            Ok(send(&url, "POST", &headers, Uint8Array::from(&body[..]).into()).await?.status())
        })
    }

    fn sleep(&self, ms: u64) -> LocalBoxFuture<'_, ()> {
        Box::pin(sleep(ms))
    }
}

/// The upstream of a pull-through cache, reached with the Fetch API.
struct Fetcher;

impl Upstream<R2> for Fetcher {
    fn fetch(&self, request: UpstreamRequest) -> LocalBoxFuture<'_, Result<UpstreamResponse<ReadableStream>, String>> {
        Box::pin(async move {
            let method = if request.method == Method::Head { "HEAD" } else { "GET" };
            let headers: Vec<_> = request.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            // Redirects come back to the core, which follows them without credentials.
            let response = send(&request.url, method, &headers, JsValue::UNDEFINED).await?;
            let mut out = Headers::new();
            for pair in Array::from(&response.headers()).iter() {
                let pair: Array = pair.unchecked_into();
                if let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                    out.append(&name, &value);
                }
            }
            Ok(UpstreamResponse { status: response.status(), headers: out, body: response.body() })
        })
    }

    fn read(&self, body: ReadableStream, limit: usize) -> LocalBoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let mut reading = Reading::start(body)?;
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

    /// `stream.tee()`, the second branch piped through a `FixedLengthStream` of `length`: R2 and
    /// the Cache API want streams of known length. `pipeThrough` carries a failed pipe to the
    /// readable side, where the put reading it fails with it.
    fn tee(&self, body: ReadableStream, length: u64) -> Result<(ReadableStream, ReadableStream), String> {
        let branches = body.tee();
        let fixed = FixedLengthStream::new(BigInt::from(length)).map_err(js_error)?;
        let to_store = branches.get(1).unchecked_into::<ReadableStream>().pipe_through(&fixed).map_err(js_error)?;
        Ok((branches.get(0).unchecked_into(), to_store))
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

thread_local! {
    /// The isolate's memo of hot tags and manifests, kept across requests.
    static MEMO: OnceCell<Rc<Memo>> = const { OnceCell::new() };
    /// The isolate's configuration, parsed from its variables on the first request.
    static CONFIG: OnceCell<Rc<Config>> = const { OnceCell::new() };
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// The registry over this Worker's bindings and variables. A configuration error is logged
/// and reported as the message of an internal error.
fn registry(env: &JsValue, cache: Option<EdgeCache>) -> Result<Registry<R2, Kv>, RegistryError> {
    // Variables and secrets alike (users and the token key are secrets) are strings of `env`.
    // They are fixed for an isolate's life (a change deploys a new one), so they are parsed
    // once: not on every pull.
    let config = match CONFIG.with(|c| c.get().cloned()) {
        Some(config) => config,
        None => {
            let config = Rc::new(
                Config::from_vars(&|name| field(env, name).as_string())
                    .map_err(|e| RegistryError::internal(format!("configuration: {e}")))?,
            );
            // Once per isolate too: where log lines go, and how many.
            crate::log::set_sink(|line| match line.starts_with(r#"{"level":"error""#) {
                true => console_error(line),
                false => console_log(line),
            });
            crate::log::set_level(config.log_level);
            CONFIG.with(|c| c.get_or_init(|| config.clone()).clone())
        }
    };
    let binding = |name: &str| {
        let value = field(env, name);
        match value.is_object() {
            true => Ok(value),
            false => Err(RegistryError::internal(format!("binding {name} is missing"))),
        }
    };
    let bucket: Bucket = binding("BUCKET")?.unchecked_into();
    let kv: KvNamespace = binding("TAGS")?.unchecked_into();
    let pull_through = config.upstream.is_some();
    let notifying = config.notify.is_some();
    let memo = MEMO.with(|m| m.get_or_init(|| Rc::new(Memo::new(config.tag_memo_secs))).clone());
    let mut registry = Registry::new(R2 { bucket, cache }, Kv(kv), config, Box::new(now_ms)).with_memo(memo);
    if pull_through {
        registry = registry.with_upstream(Box::new(Fetcher));
    }
    if notifying {
        registry = registry.with_notifier(Box::new(Poster));
    }
    Ok(registry.with_signature_check(Box::new(|alg, jwk, data, signature| {
        Box::pin(async move { webcrypto_verify(&alg, &jwk, &data, &signature).await.map_err(js_error) })
    })))
}

/// Verifies an ES256 or RS256 signature with WebCrypto (`crypto.subtle`), so that no
/// public-key code has to live in the wasm.
async fn webcrypto_verify(alg: &str, jwk: &Json, data: &[u8], signature: &[u8]) -> Result<bool, JsValue> {
    let (import, verify) = match alg {
        "ES256" => (
            js_object(&[("name", "ECDSA".into()), ("namedCurve", "P-256".into())]),
            js_object(&[("name", "ECDSA".into()), ("hash", "SHA-256".into())]),
        ),
        "RS256" => (
            js_object(&[("name", "RSASSA-PKCS1-v1_5".into()), ("hash", "SHA-256".into())]),
            js_object(&[("name", "RSASSA-PKCS1-v1_5".into())]),
        ),
        _ => return Ok(false),
    };
    let subtle = field(&field(&js_sys::global(), "crypto"), "subtle");
    let call = |method: &str, args: Array| -> Result<JsFuture, JsValue> {
        let f: Function = Reflect::get(&subtle, &method.into())?.dyn_into()?;
        Ok(JsFuture::from(Promise::from(f.apply(&subtle, &args)?)))
    };
    let jwk = JSON::parse(&jwk.to_string())?;
    let usages = Array::of1(&"verify".into());
    let key = call("importKey", Array::of5(&"jwk".into(), &jwk, &import, &false.into(), &usages))?.await?;
    let signature = Uint8Array::from(signature);
    let data = Uint8Array::from(data);
    Ok(call("verify", Array::of4(&verify, &key, &signature, &data))?.await?.is_truthy())
}

/// The fetch event.
#[wasm_bindgen]
pub async fn fetch(req: JsRequest, env: JsValue, ctx: Context) -> Result<JsResponse, JsValue> {
    let mut headers = Headers::new();
    for pair in Array::from(&req.headers()).iter() {
        let pair: Array = pair.unchecked_into();
        if let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
            headers.append(&name, &value);
        }
    }
    let method = Method::parse(&req.method());
    let body = RequestBody { raw: req.body(), reading: None };
    let request = http::Request::from_url(method, &req.url(), headers, body);
    let cache = EdgeCache::new(request.origin.clone(), ctx.clone());
    let registry = match registry(&env, cache) {
        Ok(r) => r,
        Err(e) => return to_js(e.into()),
    };
    let response = registry.handle(request).await;
    // What is left for after the response (the pull-through cache storing what it served).
    if registry.has_background() {
        ctx.wait_until(&js_sys::futures::future_to_promise(async move {
            registry.run_background().await;
            Ok(JsValue::UNDEFINED)
        }));
    }
    to_js(response)
}

/// The cron trigger of wrangler.toml: abort upload sessions abandoned by their clients, then,
/// with `WHARF_GC`, collect garbage (a dry run only logs its report).
#[wasm_bindgen]
pub async fn scheduled(_event: JsValue, env: JsValue, _ctx: JsValue) -> Result<(), JsValue> {
    let Ok(registry) = registry(&env, None) else { return Ok(()) };
    let now = now_ms();
    match registry.clean_abandoned_uploads(now).await {
        Ok(0) => {}
        Ok(n) => console_log(&format!("removed {n} abandoned upload sessions")),
        Err(e) => console_error(&format!("upload cleanup failed: {e}")),
    }
    let dry_run = match registry.config.gc {
        GcMode::Off => return Ok(()),
        GcMode::DryRun => true,
        GcMode::On => false,
    };
    match registry.collect_garbage(now, dry_run).await {
        Ok(report) => console_log(&format!("gc: {}", report.to_json())),
        Err(e) => console_error(&format!("gc failed: {}", e.message())),
    }
    Ok(())
}

fn to_js(response: http::Response<ReadableStream>) -> Result<JsResponse, JsValue> {
    let body: JsValue = match response.body {
        Body::Empty => JsValue::NULL,
        Body::Bytes(b) => Uint8Array::from(&b[..]).into(),
        Body::Stream(s) => s.into(),
    };
    let headers = JsHeaders::new();
    for (name, value) in &response.headers {
        headers.append(name, value)?;
    }
    JsResponse::new(&body, &js_object(&[("status", response.status.into()), ("headers", headers.into())]))
}
