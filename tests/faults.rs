//! Crash safety: every push, tag, delete and upload path run with its Nth storage operation
//! failing (an error the request sees, or a crash that stops it there), for every N. After each
//! run the storage must be consistent, an acknowledged request's effect must be there, and the
//! same request retried must succeed.
//!
//! Consistent means: every object under a digest holds bytes of that digest; every tag, in R2
//! and in KV, points at a manifest that exists; every blob link leads to bytes that can be
//! pulled. The registries run on the platform model (`wharf::storage::memory::Platform`): a
//! retry writing a key again within the second is refused once, as on Cloudflare, and retried.

mod common;

use common::*;
use wharf::Config;
use wharf::base::http::{MemoryBody, Method};
use wharf::base::names::Digest;
use wharf::config::GcMode;
use wharf::oci::uploads::PART_SIZE;
use wharf::storage::memory::{Fault, Faults};

fn config() -> Config {
    // Collection on: pushes and mounts take their extra checks (see `wharf::ops::gc`).
    Config { delete_enabled: true, gc: GcMode::On, ..Config::default() }
}

/// What storage holds must agree with itself, as seen by a registry with no memory of its own.
fn assert_consistent(t: &TestRegistry, context: &str) {
    let fresh = t.sharing_storage(config());
    let objects = t.objects.snapshot();
    for (key, bytes) in &objects {
        let hex = key.rsplit('/').next().unwrap_or_default();
        if key.contains("/_manifests/sha256/") {
            assert_eq!(Digest::sha256_of(bytes).hex(), hex, "{context}: {key} holds other bytes");
        }
        // The registry-wide index names bytes of its digest.
        if key.starts_with("digests/sha256/") {
            let meta = t.objects.metadata(key).expect("listed");
            let object = &objects[&meta.custom["object"]];
            assert_eq!(Digest::sha256_of(object).hex(), hex, "{context}: {key} names other bytes");
        }
        if let Some((repo, _)) = key.strip_prefix("repositories/").and_then(|k| k.split_once("/_layers/")) {
            let d = format!("sha256:{hex}");
            let r = fresh.get(&format!("/v2/{repo}/blobs/{d}"), &[]);
            assert_eq!(r.status, 200, "{context}: link {key} leads nowhere");
            assert_eq!(Digest::sha256_of(&r.body).to_string(), d, "{context}: {key}");
        }
    }
    // Tags in R2, the source of truth, and their copies in KV, point at manifests that exist.
    for key in objects.keys().filter(|k| k.contains("/_tags/")) {
        let record = wharf::storage::keys::TagRecord::from_metadata(&t.objects.metadata(key).expect("listed").custom);
        let (repo, _) = key.strip_prefix("repositories/").and_then(|k| k.split_once("/_tags/")).expect("tag key");
        let hex = record.expect("a tag record").digest.strip_prefix("sha256:").expect("sha256 tag").to_owned();
        let manifest = format!("repositories/{repo}/_manifests/sha256/{hex}");
        assert!(objects.contains_key(&manifest), "{context}: tag {key} points at a missing manifest");
    }
    for (key, digest) in t.kv.snapshot() {
        let (repo, _) = key.strip_prefix("tags/").and_then(|k| k.rsplit_once(':')).expect("tag key");
        let hex = digest.strip_prefix("sha256:").expect("sha256 tag");
        let manifest = format!("repositories/{repo}/_manifests/sha256/{hex}");
        assert!(objects.contains_key(&manifest), "{context}: tag {key} points at a missing manifest");
    }
}

/// Runs `scenario` once cleanly to count its operations, then once per operation and fault.
/// `setup` builds the state before it; `scenario` returns whether it was acknowledged; `effect`
/// checks, on a fresh registry, what an acknowledged run must have left.
fn for_every_fault(
    name: &str,
    setup: impl Fn(&TestRegistry),
    scenario: impl Fn(&TestRegistry) -> bool,
    effect: impl Fn(&TestRegistry),
) {
    let count = {
        let faults = Faults::new();
        let t = TestRegistry::on_platform_with_faults(config(), 10_000, &faults);
        setup(&t);
        faults.clear();
        assert!(scenario(&t), "{name} fails without faults");
        faults.count()
    };
    assert!(count > 0);
    for n in 1..=count {
        for fault in [Fault::Error, Fault::Crash] {
            let context = format!("{name}, {fault:?} at operation {n} of {count}");
            let faults = Faults::new();
            let t = TestRegistry::on_platform_with_faults(config(), 10_000, &faults);
            setup(&t);
            faults.fail_at(n, fault);
            let acknowledged = scenario(&t);
            faults.clear();
            assert_consistent(&t, &context);
            if acknowledged {
                effect(&t.sharing_storage(config()));
            }
            assert!(scenario(&t), "{context}: the retry failed");
            assert_consistent(&t, &format!("{context}, retried"));
            effect(&t.sharing_storage(config()));
        }
    }
}

fn pull_tag(t: &TestRegistry, repo: &str, tag: &str) -> TestResponse {
    t.get(&format!("/v2/{repo}/manifests/{tag}"), &[("Accept", ACCEPT_ALL)])
}

#[test]
fn a_monolithic_blob_push_is_crash_safe() {
    let d = Digest::sha256_of(b"a layer");
    for_every_fault(
        "monolithic push",
        |_| {},
        |t| {
            let path = format!("/v2/r/blobs/uploads/?digest={d}");
            t.send(Method::Post, &path, &[], MemoryBody::from_bytes(&b"a layer"[..])).status == 201
        },
        |t| assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, b"a layer"),
    );
}

#[test]
fn a_chunked_upload_is_crash_safe() {
    let data: Vec<u8> = (0..PART_SIZE + 1000).map(|i| (i % 249) as u8).collect();
    let d = Digest::sha256_of(&data);
    for_every_fault(
        "chunked upload",
        |_| {},
        |t| {
            let r = t.send(Method::Post, "/v2/r/blobs/uploads/", &[], MemoryBody::empty());
            let Some(location) = r.header("Location").map(str::to_owned) else { return false };
            // The first chunk without a length is buffered and carried; the second, announced,
            // streams a part made of the carried bytes and its own.
            let half = data.len() / 2;
            for (start, end, announced) in [(0, half, false), (half, data.len(), true)] {
                let range = format!("{start}-{}", end - 1);
                let length = (end - start).to_string();
                let mut headers = vec![("Content-Range", range.as_str())];
                if announced {
                    headers.push(("Content-Length", &length));
                }
                let body = MemoryBody::from_chunks(data[start..end].chunks(100_003).map(<[u8]>::to_vec).collect());
                if t.send(Method::Patch, &location, &headers, body).status != 202 {
                    return false;
                }
            }
            t.send(Method::Put, &format!("{location}?digest={d}"), &[], MemoryBody::empty()).status == 201
        },
        |t| assert!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body == data),
    );
}

/// An image's manifest. Its blobs are pushed by `image_manifest` in each test's setup, which
/// makes the same bytes for the same seed.
fn manifest_of(seed: &str) -> Vec<u8> {
    TestRegistry::new().image_manifest("r", OCI_MANIFEST, seed)
}

#[test]
fn a_manifest_push_and_a_tag_move_are_crash_safe() {
    let a = manifest_of("a");
    for_every_fault(
        "manifest push",
        |t| {
            t.image_manifest("r", OCI_MANIFEST, "a");
        },
        |t| t.put_manifest("r", "v1", OCI_MANIFEST, &a).status == 201,
        |t| assert_eq!(pull_tag(t, "r", "v1").body, a),
    );
    let new = manifest_of("new");
    for_every_fault(
        "tag move",
        |t| {
            t.push_image("r", "v1", OCI_MANIFEST, "old");
            t.image_manifest("r", OCI_MANIFEST, "new");
        },
        |t| t.put_manifest("r", "v1", OCI_MANIFEST, &new).status == 201,
        |t| assert_eq!(pull_tag(t, "r", "v1").body, new),
    );
}

#[test]
fn deletes_are_crash_safe() {
    let d = Digest::sha256_of(&manifest_of("a"));
    for_every_fault(
        "manifest delete by digest",
        |t| {
            t.push_image("r", "v1", OCI_MANIFEST, "a");
            t.push_image("r", "v2", OCI_MANIFEST, "a");
        },
        // Gone already (a retry after an acknowledged delete) counts as done.
        |t| matches!(t.delete(&format!("/v2/r/manifests/{d}")).status, 202 | 404),
        |t| {
            assert_eq!(pull_tag(t, "r", "v1").status, 404);
            assert_eq!(pull_tag(t, "r", "v2").status, 404);
            assert_eq!(t.get(&format!("/v2/r/manifests/{d}"), &[("Accept", ACCEPT_ALL)]).status, 404);
        },
    );
    for_every_fault(
        "tag delete",
        |t| {
            t.push_image("r", "v1", OCI_MANIFEST, "a");
        },
        |t| matches!(t.delete("/v2/r/manifests/v1").status, 202 | 404),
        |t| assert_eq!(pull_tag(t, "r", "v1").status, 404),
    );
    let d = Digest::sha256_of(b"layer");
    for_every_fault(
        "blob delete",
        |t| {
            t.push_blob("r", b"layer");
        },
        |t| matches!(t.delete(&format!("/v2/r/blobs/{d}")).status, 202 | 404),
        |t| assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).status, 404),
    );
}

#[test]
fn a_mount_is_crash_safe() {
    let d = Digest::sha256_of(b"shared layer");
    for_every_fault(
        "mount",
        |t| {
            t.push_blob("a", b"shared layer");
        },
        |t| {
            let path = format!("/v2/b/blobs/uploads/?mount={d}&from=a");
            t.send(Method::Post, &path, &[], MemoryBody::empty()).status == 201
        },
        |t| assert_eq!(t.get(&format!("/v2/b/blobs/{d}"), &[]).body, b"shared layer"),
    );
}
