//! Whole requests against a registry over the in-memory stores, with an image already pushed:
//! any method, path, query, headers (Range, Content-Range, Accept, If-None-Match, ...) and body.
//! The in-memory stores never fail, so a 5xx can only be wharf's own bug: the oracle.
#![no_main]

use futures_executor::block_on;
use libfuzzer_sys::fuzz_target;
use wharf::base::http::{Headers, MemoryBody, Method, Request};
use wharf::storage::memory::{MemoryKv, MemoryObjects};
use wharf::{Config, Registry};

const METHODS: [Method; 6] = [Method::Get, Method::Head, Method::Post, Method::Put, Method::Patch, Method::Delete];
const HEADERS: [&str; 7] =
    ["range", "content-range", "accept", "if-none-match", "if-range", "content-type", "content-length"];

fuzz_target!(|data: &[u8]| {
    // Layout: method byte, then lines: the path, `<header index byte><value>` lines, then the body
    // after an empty line.
    let Some((&m, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let Some(path) = lines.next() else { return };
    let mut headers = Headers::new();
    for line in lines {
        let Some(first) = line.bytes().next() else { continue };
        headers.append(HEADERS[first as usize % HEADERS.len()], line.get(1..).unwrap_or(""));
    }
    let registry = Registry::new(
        MemoryObjects::new(),
        MemoryKv::new(),
        // Every optional surface on: the UI, collection's extra checks, immutable tags.
        Config {
            delete_enabled: true,
            ui: true,
            gc: wharf::config::GcMode::On,
            immutable_tags: wharf::config::tags::ImmutableTags::parse("v*").unwrap(),
            ..Config::default()
        },
        Box::new(|| 1_800_000_000_000),
    );
    seed(&registry);
    let method = METHODS[m as usize % METHODS.len()];
    let request = Request::new(method, path, headers, MemoryBody::from_bytes(body.as_bytes().to_vec()));
    let response = block_on(registry.handle(request));
    assert!(response.status < 500, "{method:?} {path}: {}", response.status);
});

/// A blob in repository `r` and an OCI image tagged `v1`.
fn seed(registry: &Registry<MemoryObjects, MemoryKv>) {
    let send = |method, path: &str, ct: &str, body: &[u8]| {
        let headers = Headers::new().with("content-type", ct);
        let r = block_on(registry.handle(Request::new(method, path, headers, MemoryBody::from_bytes(body.to_vec()))));
        assert!(r.status < 300, "seeding {path}: {}", r.status);
    };
    let config = b"{}";
    let layer = b"0123456789";
    let (c, l) = (wharf::base::names::Digest::sha256_of(config), wharf::base::names::Digest::sha256_of(layer));
    send(Method::Post, &format!("/v2/r/blobs/uploads/?digest={c}"), "application/octet-stream", config);
    send(Method::Post, &format!("/v2/r/blobs/uploads/?digest={l}"), "application/octet-stream", layer);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":10}}]}}"#
    );
    send(Method::Put, "/v2/r/manifests/v1", "application/vnd.oci.image.manifest.v1+json", manifest.as_bytes());
}
