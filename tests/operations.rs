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

/// Captures this thread's log lines at `level`, as JSON.
fn captured_logs(level: wharf::log::Level) -> std::rc::Rc<std::cell::RefCell<Vec<String>>> {
    let lines = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let sink = lines.clone();
    wharf::log::set_sink(move |line| sink.borrow_mut().push(line.to_owned()));
    wharf::log::set_level(level);
    lines
}

#[test]
fn every_request_logs_one_json_line_without_secrets() {
    let lines = captured_logs(wharf::log::Level::Info);
    let t = TestRegistry::new();
    let (_, digest) = t.push_image("team/app", "v1", OCI_MANIFEST, "x");
    lines.borrow_mut().clear();

    let secret = "Basic dXNlcjpodW50ZXIy";
    let r = t.get("/v2/team/app/manifests/v1?token=hunter2", &[("Accept", ACCEPT_ALL), ("Authorization", secret)]);
    let missing = t.get("/v2/team/app/manifests/nope", &[("Accept", ACCEPT_ALL)]);
    let blob = t.head(&format!("/v2/team/app/blobs/{digest}"), &[]);
    let logged: Vec<serde_json::Value> = lines.borrow().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(logged.len(), 3, "{logged:?}");

    let line = &logged[0];
    assert_eq!(line["level"], "info");
    assert_eq!((line["method"].as_str(), line["route"].as_str()), (Some("GET"), Some("manifest")));
    assert_eq!((line["repository"].as_str(), line["status"].as_u64()), (Some("team/app"), Some(200)));
    assert_eq!(line["bytes"].as_u64(), r.header("Content-Length").and_then(|l| l.parse().ok()));
    assert!(line["durationMs"].is_u64());
    assert_eq!(line["requestId"].as_str(), r.header("X-Request-Id"));
    assert!(line.get("userAgent").is_none(), "User-Agent only at debug");
    assert_eq!((logged[1]["status"].as_u64(), logged[1]["error"].as_str()), (Some(404), Some("MANIFEST_UNKNOWN")));
    assert_eq!((logged[2]["route"].as_str(), logged[2]["status"].as_u64()), (Some("blob"), Some(404)));
    assert_ne!(missing.header("X-Request-Id"), r.header("X-Request-Id"));
    assert_eq!(blob.status, 404, "a manifest is not a blob");
    let all = lines.borrow().join("\n");
    for secret in ["hunter2", "dXNlcjpodW50ZXIy", "token="] {
        assert!(!all.contains(secret), "{secret} logged: {all}");
    }

    // Cloudflare's ray id names the request; anything else claiming to be one does not.
    lines.borrow_mut().clear();
    let r = t.get("/v2/", &[("cf-ray", "8f2a1b3c4d5e6f70-AMS")]);
    assert_eq!(r.header("X-Request-Id"), Some("8f2a1b3c4d5e6f70-AMS"));
    let r = t.get("/v2/", &[("cf-ray", "x\"}{\"level\":\"forged")]);
    assert_ne!(r.header("X-Request-Id"), Some("x\"}{\"level\":\"forged"));
    assert_eq!(lines.borrow().len(), 2);
    assert!(lines.borrow().iter().all(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["level"] == "info"));

    wharf::log::set_level(wharf::log::Level::Debug);
    t.get("/v2/", &[("User-Agent", "skopeo/1.13")]);
    let last: serde_json::Value = serde_json::from_str(lines.borrow().last().unwrap()).unwrap();
    assert_eq!(last["userAgent"], "skopeo/1.13");

    wharf::log::set_level(wharf::log::Level::Off);
    lines.borrow_mut().clear();
    t.get("/v2/", &[]);
    assert!(lines.borrow().is_empty());
}
