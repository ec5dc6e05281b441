//! What a push costs in storage, counted by the in-memory stores: R2 reads (Class B) and writes
//! (Class A), KV reads and writes, and the sequential round trips the client waits for. On
//! Cloudflare each operation is billed and each round trip adds to the push's latency.

mod common;

use common::*;
use wharf::storage::memory::Counts;

/// An OCI image manifest over `layers` fresh layers and a config, its blobs pushed.
fn image(t: &TestRegistry, repo: &str, layers: usize, seed: &str) -> Vec<u8> {
    let config = t.push_blob(repo, format!(r#"{{"seed":"{seed}"}}"#).as_bytes());
    let config = format!(
        r#"{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}}"#,
        seed.len() + 11
    );
    let layers: Vec<String> = (0..layers)
        .map(|i| {
            let bytes = format!("layer {i} of {seed}");
            let d = t.push_blob(repo, bytes.as_bytes());
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
                bytes.len()
            )
        })
        .collect();
    format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{config},"layers":[{}]}}"#, layers.join(","))
        .into_bytes()
}

/// Pushes `body` to `reference` and returns what it cost.
fn push(t: &TestRegistry, repo: &str, reference: &str, body: &[u8]) -> Counts {
    t.operations.take();
    let r = t.put_manifest(repo, reference, OCI_MANIFEST, body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    t.operations.take()
}

#[test]
fn explore() {
    let t = TestRegistry::new();
    let body = image(&t, "r", 2, "a");
    println!("new manifest: {:?}", push(&t, "r", "v1", &body));
    println!("same tag again: {:?}", push(&t, "r", "v1", &body));
    println!("new tag: {:?}", push(&t, "r", "v2", &body));
    let other = t.sharing_storage(wharf::Config { delete_enabled: true, ..Default::default() });
    println!("same tag, other isolate: {:?}", push(&other, "r", "v1", &body));
    for n in [1, 5, 20] {
        let body = image(&t, "n", n, &format!("n{n}"));
        let other = t.sharing_storage(wharf::Config::default());
        println!("{n} layers, other isolate: {:?}", push(&other, "n", "x", &body));
    }
}
