//! What the glue needs of the Workers runtime that workers-rs does not wrap, reached through
//! the crates it is built on (web-sys, js-sys, worker-sys):
//! - reading a body stream in large pieces with workerd's BYOB `readAtLeast`;
//! - splitting a stream into a branch for the client and one of known length for R2 or the
//!   Cache API (`tee` and `pipeThrough` a `FixedLengthStream`);
//! - checking a token's signature with WebCrypto, so that no public-key code lives in the wasm;
//! - deriving a password's PBKDF2 with WebCrypto, natively rather than in wasm.
//!
//! Calls that can throw are bound with `catch`: a runtime exception becomes an `Err`, never an
//! exception unwinding through the wasm.

use ::worker::js_sys::{self, Array, ArrayBuffer, BigInt, Object, Promise, Reflect, Uint8Array};
use ::worker::wasm_bindgen::JsCast;
use ::worker::wasm_bindgen::prelude::*;
use ::worker::wasm_bindgen_futures::JsFuture;
use ::worker::web_sys::{CryptoKey, ReadableStream, ReadableStreamDefaultReader, TransformStream, WorkerGlobalScope};
use ::worker::worker_sys::FixedLengthStream;
use serde_json::Value;

#[wasm_bindgen]
extern "C" {
    /// `ReadableStream`, for the calls web-sys binds without `catch`.
    #[wasm_bindgen(js_name = ReadableStream)]
    type Stream;
    /// `getReader({mode: "byob"})`: throws, leaving the stream unlocked, when the stream is not
    /// a byte stream.
    #[wasm_bindgen(method, catch, js_name = getReader)]
    fn get_reader_with(this: &Stream, options: &Object) -> Result<ByobReader, JsValue>;
    #[wasm_bindgen(method, catch, js_name = getReader)]
    fn get_reader(this: &Stream) -> Result<ReadableStreamDefaultReader, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn tee(this: &Stream) -> Result<Array, JsValue>;
    #[wasm_bindgen(method, catch, js_name = pipeThrough)]
    fn pipe_through(this: &Stream, transform: &TransformStream) -> Result<ReadableStream, JsValue>;

    /// A `ReadableStreamBYOBReader`, with workerd's `readAtLeast` extension: it resolves once at
    /// least `min_bytes` are in the view, or at the end of the stream.
    pub type ByobReader;
    #[wasm_bindgen(method, js_name = readAtLeast)]
    fn read_at_least(this: &ByobReader, min_bytes: u32, view: Uint8Array) -> Promise;
    #[wasm_bindgen(method, getter)]
    fn closed(this: &ByobReader) -> Promise;

    /// A `Promise`, for `catch` with a handler that is a plain JS function.
    #[wasm_bindgen(js_name = Promise)]
    type Caught;
    #[wasm_bindgen(method, js_name = catch)]
    fn catch_with(this: &Caught, handler: &JsValue) -> Promise;
}

/// Marks a promise nobody awaits as handled, so that its rejection (an abort of a stream whose
/// other side already failed) is not reported as an uncaught error.
pub fn ignore(promise: Promise) {
    // A built-in that takes any value and never throws: no wasm closure to keep alive or free.
    let handler = field(&js_sys::global(), "Boolean");
    let _ = promise.unchecked_ref::<Caught>().catch_with(&handler);
}

/// A JS exception's text: `Error: message` for an Error, else the thrown value as a string.
pub fn js_error(e: JsValue) -> String {
    match e.dyn_ref::<js_sys::Error>() {
        Some(error) => error.to_string().into(),
        None => e.as_string().unwrap_or_else(|| "a JavaScript value was thrown".to_owned()),
    }
}

/// `value[name]`; undefined when absent.
fn field(value: &JsValue, name: &str) -> JsValue {
    Reflect::get(value, &name.into()).unwrap_or(JsValue::UNDEFINED)
}

/// Bytes asked of a stream per read. The default reader hands over whatever small chunks the
/// connection produced, one JS promise each (~14 MB/s); reading 1 MiB at a time into one
/// reused buffer is what makes chunked uploads keep up with R2.
const READ_SIZE: u32 = 1 << 20;

/// A body stream read in pieces of up to [`READ_SIZE`] bytes, copied into wasm one at a time.
pub enum BodyStream {
    /// workerd's request and response bodies are byte streams. The buffer is reused read after
    /// read; `None` once the stream has ended.
    Byob { reader: ByobReader, buffer: Option<ArrayBuffer> },
    /// Any other stream, read with the default reader.
    Default(ReadableStreamDefaultReader),
}

impl BodyStream {
    pub fn start(stream: ReadableStream) -> Result<Self, String> {
        let stream: &Stream = stream.unchecked_ref();
        let options = Object::new();
        let _ = Reflect::set(&options, &"mode".into(), &"byob".into());
        // A reader's `closed` promise rejects when the stream breaks (a client gone mid-body);
        // the read that fails reports it, so that promise is marked handled.
        match stream.get_reader_with(&options) {
            Ok(reader) => {
                ignore(reader.closed());
                Ok(BodyStream::Byob { reader, buffer: Some(ArrayBuffer::new(READ_SIZE)) })
            }
            Err(_) => {
                let reader = stream.get_reader().map_err(js_error)?;
                ignore(reader.closed());
                Ok(BodyStream::Default(reader))
            }
        }
    }

    /// The next piece, `None` at the end. An error means the stream broke (a client that went
    /// away mid-body, an upstream that failed).
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        let read = match self {
            BodyStream::Byob { reader, buffer } => match buffer.take() {
                None => return Ok(None),
                Some(buffer) => reader.read_at_least(READ_SIZE, Uint8Array::new(&buffer)),
            },
            BodyStream::Default(reader) => reader.read(),
        };
        let result = JsFuture::from(read).await.map_err(|e| format!("reading the body: {}", js_error(e)))?;
        let done = field(&result, "done").is_truthy();
        let value = field(&result, "value");
        if value.is_undefined() {
            return Ok(None);
        }
        let value: Uint8Array = value.unchecked_into();
        let bytes = value.to_vec();
        if let BodyStream::Byob { buffer, .. } = self
            && !done
        {
            // The read transferred the buffer into `value`; read into it again.
            *buffer = Some(value.buffer());
        }
        Ok(if bytes.is_empty() && done { None } else { Some(bytes) })
    }
}

/// `stream.tee()`, the second branch piped through a `FixedLengthStream` of `length`: R2 and
/// the Cache API want streams of known length. `pipeThrough` carries a failed pipe to the
/// readable side, where the put reading it fails with it.
pub fn tee_fixed(stream: ReadableStream, length: u64) -> Result<(ReadableStream, ReadableStream), JsValue> {
    let branches = stream.unchecked_ref::<Stream>().tee()?;
    let fixed = FixedLengthStream::new_big_int(BigInt::from(length))?;
    let to_store = branches.get(1).unchecked_into::<Stream>().pipe_through(&fixed)?;
    Ok((branches.get(0).unchecked_into(), to_store))
}

/// A plain object of string members, for WebCrypto's algorithm parameters.
fn object(members: &[(&str, &str)]) -> Object {
    let o = Object::new();
    for (name, value) in members {
        // Setting a property of a fresh plain object cannot fail.
        let _ = Reflect::set(&o, &(*name).into(), &(*value).into());
    }
    o
}

/// Verifies an ES256 or RS256 signature with WebCrypto (`crypto.subtle`): `importKey` of the
/// JWK, then `verify`. Any other algorithm does not verify.
pub async fn webcrypto_verify(alg: &str, jwk: &Value, data: &[u8], signature: &[u8]) -> Result<bool, JsValue> {
    let (import, verify) = match alg {
        "ES256" => {
            (object(&[("name", "ECDSA"), ("namedCurve", "P-256")]), object(&[("name", "ECDSA"), ("hash", "SHA-256")]))
        }
        "RS256" => {
            (object(&[("name", "RSASSA-PKCS1-v1_5"), ("hash", "SHA-256")]), object(&[("name", "RSASSA-PKCS1-v1_5")]))
        }
        _ => return Ok(false),
    };
    let subtle = js_sys::global().unchecked_into::<WorkerGlobalScope>().crypto()?.subtle();
    let jwk: Object = js_sys::JSON::parse(&jwk.to_string())?.dyn_into()?;
    let usages = Array::of1(&"verify".into());
    let key: CryptoKey =
        JsFuture::from(subtle.import_key_with_object("jwk", &jwk, &import, false, &usages)?).await?.unchecked_into();
    let verified = subtle.verify_with_object_and_u8_array_and_u8_array(&verify, &key, signature, data)?;
    Ok(JsFuture::from(verified).await?.is_truthy())
}

/// The most PBKDF2 iterations workerd's WebCrypto derives; it refuses more (a count above is
/// derived in wasm).
const WEBCRYPTO_MAX_ITERATIONS: u32 = 100_000;

/// PBKDF2-HMAC-SHA256 of `password`, 32 bytes, with WebCrypto (`importKey("raw")`, then
/// `deriveBits`).
pub async fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> Result<Vec<u8>, JsValue> {
    if iterations > WEBCRYPTO_MAX_ITERATIONS {
        return Err(JsValue::from_str("more iterations than WebCrypto derives"));
    }
    let subtle = js_sys::global().unchecked_into::<WorkerGlobalScope>().crypto()?.subtle();
    let usages = Array::of1(&"deriveBits".into());
    let import = subtle.import_key_with_str("raw", &Uint8Array::from(password), "PBKDF2", false, &usages)?;
    let key: CryptoKey = JsFuture::from(import).await?.unchecked_into();
    let params = object(&[("name", "PBKDF2"), ("hash", "SHA-256")]);
    Reflect::set(&params, &"salt".into(), &Uint8Array::from(salt))?;
    Reflect::set(&params, &"iterations".into(), &iterations.into())?;
    let bits = JsFuture::from(subtle.derive_bits_with_object(&params, &key, 256)?).await?;
    Ok(Uint8Array::new(&bits).to_vec())
}
