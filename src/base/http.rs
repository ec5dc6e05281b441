//! The registry's own small HTTP model, independent of any runtime. The Worker glue converts
//! to and from workers-rs types; native tests build these directly.
#![allow(async_fn_in_trait)]

use crate::base::error::RegistryError;

/// The type of blob bytes, which wharf never interprets (and which no CDN compresses).
pub const OCTET_STREAM: &str = "application/octet-stream";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    /// A CORS preflight (see `cors`).
    Options,
    Other,
}

impl Method {
    pub fn parse(s: &str) -> Self {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
    /// Whether the method changes the registry (refused in read-only mode).
    pub fn writes(self) -> bool {
        matches!(self, Method::Post | Method::Put | Method::Patch | Method::Delete)
    }
}

/// Request headers, names lower-cased. Repeated headers stay separate entries: Accept
/// negotiation reads all of them.
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn append(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.append(name, value);
        self
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The announced length of a body (`Content-Length`), if readable.
    pub fn content_length(&self) -> Option<u64> {
        self.get("content-length").and_then(|l| l.trim().parse().ok())
    }
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A request body read in chunks as they arrive, never whole.
pub trait BodyReader {
    /// The body as the platform holds it, for a store that can write it without wharf
    /// reading it (see `ObjectStore::put_verified`).
    type Raw;

    /// The next chunk, or `None` at the end. An error means the client's stream broke.
    async fn chunk(&mut self) -> Result<Option<Vec<u8>>, String>;

    /// Takes the body as a whole, unread. `None` once chunks have been read.
    fn take_raw(&mut self) -> Option<Self::Raw>;
}

/// A body held in memory, for tests and empty bodies.
#[derive(Debug, Default)]
pub struct MemoryBody(Vec<Vec<u8>>);

impl MemoryBody {
    pub fn empty() -> Self {
        Self(Vec::new())
    }
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self(vec![bytes.into()])
    }
    /// A body delivered in the given chunks.
    pub fn from_chunks(chunks: Vec<Vec<u8>>) -> Self {
        let mut chunks = chunks;
        chunks.reverse();
        Self(chunks)
    }
    /// What is left of the body, whole.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0.into_iter().rev().flatten().collect()
    }
}

impl BodyReader for MemoryBody {
    type Raw = MemoryBody;

    async fn chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.pop())
    }

    fn take_raw(&mut self) -> Option<MemoryBody> {
        Some(std::mem::take(self))
    }
}

#[derive(Debug)]
pub struct Request<B> {
    pub method: Method,
    /// The path as sent, still percent-encoded: routing splits it on the `/` the client sent
    /// before decoding each part (see `router`), so that an encoded slash cannot add a segment.
    pub path: String,
    /// Percent-decoded query parameters in order; keys may repeat.
    pub query: Vec<(String, String)>,
    pub headers: Headers,
    pub body: B,
    /// `scheme://host[:port]` the request was sent to: where the token endpoint of a
    /// challenge is (unless `WHARF_REALM` says otherwise).
    pub origin: String,
}

impl<B> Request<B> {
    /// Builds a request from a raw path-and-query as it appears on the wire.
    pub fn new(method: Method, path_and_query: &str, headers: Headers, body: B) -> Self {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        Self {
            method,
            path: path.to_owned(),
            query: parse_query(query),
            headers,
            body,
            origin: "http://localhost".to_owned(),
        }
    }
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }

    /// Builds a request from the absolute URL the runtime received (`scheme://host/path?query`,
    /// already normalised by it). Splitting it here spares the wasm a URL parser and its
    /// Unicode tables.
    pub fn from_url(method: Method, url: &str, headers: Headers, body: B) -> Self {
        let url = url.split_once('#').map_or(url, |(u, _)| u);
        let after_scheme = url.find("://").map_or(0, |i| i + 3);
        let path_start = url[after_scheme..].find(['/', '?']).map_or(url.len(), |i| after_scheme + i);
        let path_and_query = match &url[path_start..] {
            "" => "/".to_owned(),
            rest if rest.starts_with('?') => format!("/{rest}"),
            rest => rest.to_owned(),
        };
        Self::new(method, &path_and_query, headers, body).with_origin(&url[..path_start])
    }
}

/// Parses `a=1&b=2`, decoding `%XX` and `+`.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

/// Encodes all but RFC 3986's unreserved characters, for query values wharf writes in URLs.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The first value of a query parameter.
pub fn query_param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Decodes `%XX` escapes; invalid escapes and non-UTF-8 results are kept literally, and then
/// fail the grammar checks of the newtypes that read them.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|&c| (c as char).to_digit(16)).map(|d| d as u8);
        if let (b'%', Some(hi), Some(lo)) = (b[i], hex(i + 1), hex(i + 2)) {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// A response body: nothing, bytes wharf produced, or an object streamed from storage
/// without passing through wharf.
pub enum Body<S> {
    Empty,
    Bytes(Vec<u8>),
    Stream(S),
}

pub struct Response<S> {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body<S>,
}

impl<S> Response<S> {
    pub fn new(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: Body::Empty }
    }
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn body(mut self, body: Body<S>) -> Self {
        self.body = body;
        self
    }
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Keeps an answer without content (to HEAD, a 204 or 304, or any empty body) from being
    /// marked as encoded: a content coding describes content, and there is none (RFC 9110
    /// §8.4). Cloudflare's front compresses by type for clients that accept gzip, and the front
    /// of `wrangler dev` (Miniflare's emulation of it) marks even an empty answer
    /// `Content-Encoding: gzip` when its type is missing or one of those Cloudflare compresses.
    /// So an untyped answer, which carries no representation (201, 202, 204), is typed
    /// `application/octet-stream`; a 304 is typed where it is built, as its 200 would be; and
    /// an answer whose type is compressible (JSON, text: HEAD of /v2/ or of an error) names the
    /// coding "identity", which no front changes.
    pub fn without_content_coding(self, head: bool) -> Self {
        let empty = match &self.body {
            Body::Empty => true,
            Body::Bytes(b) => b.is_empty(),
            Body::Stream(_) => false,
        };
        if !(head || empty || matches!(self.status, 204 | 304)) || self.get_header("content-encoding").is_some() {
            return self;
        }
        match self.get_header("content-type") {
            None => self.header("Content-Type", OCTET_STREAM),
            Some(t) if compressed_by_type(t) => self.header("Content-Encoding", "identity"),
            Some(_) => self,
        }
    }
}

/// Whether Cloudflare compresses content of this type: its list is text, JSON, XML, JavaScript
/// and fonts (developers.cloudflare.com/speed/optimization/content/compression/); of those
/// wharf sends only JSON and text.
fn compressed_by_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence.starts_with("text/")
}

impl<S> From<RegistryError> for Response<S> {
    fn from(e: RegistryError) -> Self {
        let body = e.body();
        let mut response = Response::new(e.status())
            .header("Content-Type", "application/json")
            .header("Content-Length", body.len().to_string())
            // An error kept by a cache would outlive the push or login that changes it.
            .header("Cache-Control", "no-store");
        response.headers.extend(e.headers);
        response.body(Body::Bytes(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_urls_are_split_into_origin_path_and_query() {
        let r = Request::from_url(Method::Get, "https://r.example:8443/v2/a/b/tags/list?n=2#x", Headers::new(), ());
        assert_eq!((r.origin.as_str(), r.path.as_str()), ("https://r.example:8443", "/v2/a/b/tags/list"));
        assert_eq!(r.query, [("n".to_owned(), "2".to_owned())]);
        let r = Request::from_url(Method::Get, "http://127.0.0.1:8787", Headers::new(), ());
        assert_eq!((r.origin.as_str(), r.path.as_str()), ("http://127.0.0.1:8787", "/"));
        let r = Request::from_url(Method::Get, "http://h?x=1", Headers::new(), ());
        assert_eq!((r.origin.as_str(), r.path.as_str(), r.query.len()), ("http://h", "/", 1));
    }

    #[test]
    fn query_strings_are_split_and_decoded() {
        let q = parse_query("digest=sha256%3Aab&tag=a&tag=b&empty=&flag");
        assert_eq!(q[0], ("digest".into(), "sha256:ab".into()));
        assert_eq!(q[1].1, "a");
        assert_eq!(q[2].1, "b");
        assert_eq!(q[3], ("empty".into(), "".into()));
        assert_eq!(q[4], ("flag".into(), "".into()));
    }

    #[test]
    fn percent_encoding_round_trips() {
        for s in ["a/b", "x+y=z&w", "Zürich", "plain-._~"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%ff"), "%ff");
        assert_eq!(percent_decode("%é%"), "%é%");
        assert_eq!(percent_decode("%3a%3A"), "::");
    }

    #[test]
    fn headers_are_case_insensitive_and_keep_repeats() {
        let h = Headers::new().with("Accept", "a").with("accept", "b");
        assert_eq!(h.get("ACCEPT"), Some("a"));
        assert_eq!(h.get_all("accept").collect::<Vec<_>>(), ["a", "b"]);
    }
}
