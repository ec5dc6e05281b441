//! Operating wharf: immutable tags, structured request logs, notifications and the web UI, over
//! the in-memory backend.

mod common;

use common::*;
use wharf::Config;
use wharf::http::{MemoryBody, Method};
use wharf::tags::ImmutableTags;

fn immutable(patterns: &str) -> TestRegistry {
    TestRegistry::with_config(Config {
        delete_enabled: true,
        immutable_tags: ImmutableTags::parse(patterns).unwrap(),
        ..Config::default()
    })
}

#[test]
fn immutable_tags_are_set_once_and_then_neither_moved_nor_deleted() {
    let t = immutable("v*, prod/*:stable");
    let (v1, d1) = t.push_image("app", "v1", OCI_MANIFEST, "one");
    // The same manifest again: not a move.
    assert_eq!(t.put_manifest("app", "v1", OCI_MANIFEST, &v1).status, 201);
    let other = t.image_manifest("app", OCI_MANIFEST, "two");
    let before = t.snapshot();
    for path in ["/v2/app/manifests/v1", "/v2/app/manifests/latest?tag=v1"] {
        let r = t.send(Method::Put, path, &[("Content-Type", OCI_MANIFEST)], MemoryBody::from_bytes(other.clone()));
        assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"), "{path}");
        assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("immutable"));
        assert_eq!(t.snapshot(), before, "{path}: nothing written");
    }
    for path in ["/v2/app/manifests/v1".to_owned(), format!("/v2/app/manifests/{d1}")] {
        let r = t.delete(&path);
        assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"), "{path}");
        assert_eq!(t.snapshot(), before, "{path}: nothing deleted");
    }
    // New tags, tags outside the patterns, and other repositories are free.
    assert_eq!(t.put_manifest("app", "v2", OCI_MANIFEST, &other).status, 201);
    assert_eq!(t.put_manifest("app", "latest", OCI_MANIFEST, &other).status, 201);
    assert_eq!(t.put_manifest("app", "latest", OCI_MANIFEST, &v1).status, 201);
    assert_eq!(t.delete("/v2/app/manifests/latest").status, 202);
    let (_, stable) = t.push_image("prod/api", "stable", OCI_MANIFEST, "s");
    let moved = t.image_manifest("prod/api", OCI_MANIFEST, "s2");
    assert_eq!(t.put_manifest("prod/api", "stable", OCI_MANIFEST, &moved).status, 403);
    assert_eq!(
        t.put_manifest("dev/api", "stable", OCI_MANIFEST, &t.image_manifest("dev/api", OCI_MANIFEST, "d")).status,
        201
    );
    assert_eq!(
        t.put_manifest("dev/api", "stable", OCI_MANIFEST, &t.image_manifest("dev/api", OCI_MANIFEST, "e")).status,
        201
    );
    let r = t.get("/v2/prod/api/manifests/stable", &[("Accept", ACCEPT_ALL)]);
    assert_eq!(r.header("Docker-Content-Digest"), Some(stable.to_string().as_str()));
}
