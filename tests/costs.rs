//! What a push and a pull cost in storage, counted by the in-memory stores on the platform
//! model: R2 reads (Class B) and writes (Class A), KV reads and writes, and the sequential round
//! trips the client waits for. On Cloudflare every operation is billed and every round trip adds to the request's
//! latency, so a pull reads what the isolate does not hold, and a push writes only what is new.
//! A tag lives in R2 (the source of truth) and in KV (the fast path of pulls): R2's copy is
//! written only when it changes, KV's always, since KV is eventually consistent and a write
//! skipped on the strength of a stale read could drop the latest push.

mod common;

use common::*;
use wharf::Config;
use wharf::base::names::Digest;
use wharf::config::GcMode;
use wharf::storage::memory::Counts;

fn counts(r2_reads: usize, r2_writes: usize, kv_writes: usize, round_trips: usize) -> Counts {
    Counts { r2_reads, r2_writes, kv_reads: 0, kv_writes, round_trips }
}

/// An OCI image manifest over a config and `layers` layers, its blobs pushed by `t`.
fn image(t: &TestRegistry, repo: &str, layers: usize, seed: &str) -> Vec<u8> {
    let blob = |bytes: String, media_type: &str| {
        let d = t.push_blob(repo, bytes.as_bytes());
        format!(r#"{{"mediaType":"{media_type}","digest":"{d}","size":{}}}"#, bytes.len())
    };
    let config = blob(format!(r#"{{"seed":"{seed}"}}"#), "application/vnd.oci.image.config.v1+json");
    let layers: Vec<String> = (0..layers)
        .map(|i| blob(format!("layer {i} of {seed}"), "application/vnd.oci.image.layer.v1.tar+gzip"))
        .collect();
    format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{config},"layers":[{}]}}"#, layers.join(","))
        .into_bytes()
}

/// A registry on the platform model (Paid plan budgets), deletes allowed.
fn on_platform(config: Config) -> TestRegistry {
    TestRegistry::on_platform(Config { delete_enabled: true, ..config }, 10_000)
}

/// Pushes `body` to `reference`, a second after whatever came before (R2 and KV take one write
/// per second per key), and returns what it cost.
fn push(t: &TestRegistry, repo: &str, reference: &str, body: &[u8]) -> Counts {
    t.wait(1);
    t.operations.take();
    let r = t.put_manifest(repo, reference, OCI_MANIFEST, body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    t.operations.take()
}

/// Another isolate over the same storage: it remembers nothing.
fn other_isolate(t: &TestRegistry) -> TestRegistry {
    t.sharing_storage(Config { delete_enabled: true, ..Config::default() })
}

#[test]
fn a_new_manifest_in_a_new_repository_writes_its_bytes_the_catalog_entry_and_the_tag() {
    let t = on_platform(Config::default());
    let body = image(&t, "r", 2, "a");
    // Reads side by side: is the manifest stored, what R2 holds of the tag (the blobs were
    // uploaded through this isolate, which remembers their links). Then the bytes, beside the
    // tag's entry in the index of tags by manifest. Then, the bytes in place, is the repository
    // catalogued, beside the tag's R2 write; then the catalog entry beside the tag's KV copy.
    assert_eq!(push(&t, "r", "v1", &body), counts(3, 4, 1, 4));
    assert!(t.objects.snapshot().contains_key("catalog/r"), "{:?}", t.objects.snapshot().keys());
}

#[test]
fn a_stored_manifest_under_a_new_tag_or_again_under_its_tag_writes_only_the_tag() {
    let t = on_platform(Config::default());
    let body = image(&t, "r", 2, "a");
    push(&t, "r", "v1", &body);
    let mut stored = t.objects.snapshot();
    // The same reads; the new tag's index entry, then the tag in R2, then in KV.
    assert_eq!(push(&t, "r", "v2", &body), counts(3, 2, 1, 4));
    // The tag as it was: its KV copy alone is written again, beside the catalog read.
    assert_eq!(push(&t, "r", "v1", &body), counts(3, 0, 1, 2));
    // The objects are what they were, and the new tag.
    stored.insert("repositories/r/_tags/v2".into(), Vec::new());
    stored.insert(format!("repositories/r/_tagged/sha256/{}/v2", Digest::sha256_of(&body).hex()), Vec::new());
    assert_eq!(t.objects.snapshot(), stored);
    assert_eq!(t.get("/v2/r/manifests/v2", &[("Accept", OCI_MANIFEST)]).body, body);
}

#[test]
fn a_manifest_in_a_known_repository_is_three_r2_writes_and_one_kv_write() {
    let t = on_platform(Config::default());
    push(&t, "r", "v1", &image(&t, "r", 1, "a"));
    // The bytes beside the tag's index entry, then the tag, then its KV copy.
    assert_eq!(push(&t, "r", "v2", &image(&t, "r", 1, "b")), counts(3, 3, 1, 4));
}

#[test]
fn references_are_read_from_storage_once_per_isolate_and_side_by_side() {
    for layers in [1, 5, 7, 8, 20, 100] {
        let t = on_platform(Config::default());
        let body = image(&t, "r", layers, "a");
        push(&t, "r", "v0", &image(&t, "r", 1, "other"));
        // An isolate that did not see the uploads reads each link (config and layers) beside the
        // manifest and tag reads: still four round trips, whatever the number of layers. Past
        // eight links, one listing of the repository's links replaces the reads.
        let other = other_isolate(&t);
        let lookups = if layers + 1 > 8 { 1 } else { layers + 1 };
        assert_eq!(push(&other, "r", "v1", &body), counts(lookups + 3, 3, 1, 4), "{layers} layers");
        // Then it remembers them.
        assert_eq!(push(&other, "r", "v2", &body), counts(3, 2, 1, 4), "{layers} layers, again");
    }
}

#[test]
fn a_referrer_entry_is_written_once() {
    let t = on_platform(Config::default());
    let (_, subject) = t.push_image("r", "v1", OCI_MANIFEST, "subject");
    let config = t.push_blob("r", b"{}");
    let artifact = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":1}}}}"#
    )
    .into_bytes();
    let d = Digest::sha256_of(&artifact);
    // Reads: the manifest, the referrer entry, then (the bytes written) the catalog entry.
    // Writes: the bytes, then the referrer entry (the repository is catalogued already).
    assert_eq!(push(&t, "r", &d.to_string(), &artifact), counts(3, 2, 0, 3));
    // Again: nothing is written; a push by digest sets no tag.
    assert_eq!(push(&t, "r", &d.to_string(), &artifact), counts(3, 0, 0, 2));
    let listed = t.get(&format!("/v2/r/referrers/{subject}"), &[]).json();
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn with_garbage_collection_on_the_references_are_checked_again_in_storage_after_the_write() {
    let t = on_platform(Config { gc: GcMode::On, ..Config::default() });
    let body = image(&t, "r", 2, "a");
    // Before the tag: the three links and the manifest are read again from storage, whatever
    // the isolate remembers, so that a collection that swept one in between is seen. After
    // the tag: the manifest once more, in case a collection took it as untagged meanwhile.
    assert_eq!(push(&t, "r", "v1", &body), counts(3 + 4 + 1, 4, 1, 6));
}

/// Pulls `path` (a HEAD when `head`) and returns what it cost.
fn pull(t: &TestRegistry, path: &str, head: bool) -> Counts {
    t.operations.take();
    let accept = [("Accept", OCI_MANIFEST)];
    let r = if head { t.head(path, &accept) } else { t.get(path, &accept) };
    assert_eq!(r.status, 200, "{path}");
    t.operations.take()
}

#[test]
fn a_pull_by_tag_is_one_kv_read_and_at_most_one_r2_read() {
    let t = on_platform(Config::default());
    let body = image(&t, "r", 1, "a");
    let digest = Digest::sha256_of(&body);
    push(&t, "r", "v1", &body);
    let cold = other_isolate(&t);
    let kv = |kv_reads, r2_reads, round_trips| Counts { kv_reads, r2_reads, r2_writes: 0, kv_writes: 0, round_trips };
    // HEAD by tag: the tag's KV metadata holds digest, type and size.
    assert_eq!(pull(&cold, "/v2/r/manifests/v1", true), kv(1, 0, 1));
    // GET by tag: the tag, then the bytes.
    let cold = other_isolate(&t);
    assert_eq!(pull(&cold, "/v2/r/manifests/v1", false), kv(1, 1, 2));
    // Again within WHARF_TAG_MEMO_SECONDS (2): the isolate holds the tag and the bytes.
    assert_eq!(pull(&cold, "/v2/r/manifests/v1", false), kv(0, 0, 0));
    assert_eq!(pull(&cold, "/v2/r/manifests/v1", true), kv(0, 0, 0));
    // Later: the tag is read again, the bytes (immutable under their digest) are not.
    cold.now.set(cold.now.get() + 3);
    assert_eq!(pull(&cold, "/v2/r/manifests/v1", false), kv(1, 0, 1));
    // By digest: the bytes alone, and nothing once held.
    let fresh = other_isolate(&t);
    assert_eq!(pull(&fresh, &format!("/v2/r/manifests/{digest}"), false), kv(0, 1, 1));
    assert_eq!(pull(&fresh, &format!("/v2/r/manifests/{digest}"), false), kv(0, 0, 0));
}

#[test]
fn a_blob_the_registry_holds_already_leaves_its_registry_wide_entry_as_it_is() {
    let t = on_platform(Config::default());
    let bytes = b"a base layer every repository shares";
    let d = t.push_blob("one", bytes);
    let index = format!("digests/sha256/{}", d.hex());
    let entry = t.objects.metadata(&index).expect("the registry-wide entry");
    t.operations.take();
    t.push_blob("two", bytes);
    // The bytes (verified by R2), then their holder, then the link are written (see `gc`); the
    // entry is read beside the holder, not rewritten.
    let pushed = t.operations.take();
    assert_eq!((pushed.r2_writes, pushed.r2_reads, pushed.round_trips), (3, 1, 3), "{pushed:?}");
    assert_eq!(t.objects.metadata(&index), Some(entry));
}

#[test]
fn a_digest_named_by_several_descriptors_is_looked_up_once() {
    let t = on_platform(Config::default());
    push(&t, "r", "v0", &image(&t, "r", 1, "other"));
    let layer = t.push_blob("r", b"one layer, named three times");
    let config = t.push_blob("r", b"{}");
    let descriptor =
        format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":28}}"#);
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{descriptor},{descriptor},{descriptor}]}}"#
    );
    let other = other_isolate(&t);
    // The config and the layer, once each, beside the manifest and tag reads; then the catalog.
    assert_eq!(push(&other, "r", "v1", body.as_bytes()), counts(2 + 3, 3, 1, 4));
}

#[test]
fn a_manifest_of_more_descriptors_than_the_limit_is_refused_before_any_lookup() {
    let t = on_platform(Config::default());
    let layers: Vec<String> = (0..=wharf::oci::manifests::format::MAX_REFERENCES)
        .map(|i| {
            let d = Digest::sha256_of(format!("layer {i}").as_bytes());
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":7}}"#)
        })
        .collect();
    let config = Digest::sha256_of(b"{}");
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{}]}}"#,
        layers.join(",")
    );
    let before = t.snapshot();
    t.operations.take();
    let r = t.put_manifest("r", "v1", OCI_MANIFEST, body.as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_INVALID"));
    assert_eq!(t.operations.take(), Counts::default(), "no storage operation");
    assert_eq!(t.snapshot(), before);
}

#[test]
fn a_mount_into_a_repository_that_holds_the_blob_writes_nothing() {
    let t = on_platform(Config::default());
    let d = t.push_blob("one", b"a layer both repositories hold");
    t.push_blob("two", b"a layer both repositories hold");
    let before = t.snapshot();
    t.wait(1);
    t.operations.take();
    let path = format!("/v2/two/blobs/uploads/?mount={d}&from=one");
    let r = t.send(wharf::base::http::Method::Post, &path, &[], wharf::base::http::MemoryBody::empty());
    assert_eq!(r.status, 201);
    let mounted = t.operations.take();
    assert_eq!((mounted.r2_writes, mounted.kv_writes), (0, 0), "{mounted:?}");
    assert_eq!(t.snapshot(), before);
}
