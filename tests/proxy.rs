//! Pull-through cache mode over the in-memory backends, in front of another wharf as its
//! upstream: first pulls fetch and store, later pulls need no upstream, tags are re-checked
//! after their TTL and served from the cache when the upstream fails, writes are refused, the
//! upstream's token flow is followed, and nothing the upstream corrupts is stored.

mod common;

use common::*;
use wharf::Config;
use wharf::auth::AuthConfig;
use wharf::auth::secret::PasswordHash;
use wharf::base::http::{MemoryBody, Method};
use wharf::base::names::Digest;
use wharf::config::upstream::UpstreamConfig;

const TTL: u64 = 60;

fn upstream_config(credentials: Option<(&str, &str)>) -> Config {
    let upstream = UpstreamConfig {
        url: FakeUpstream::ORIGIN.to_owned(),
        credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
        tag_ttl_secs: TTL,
    };
    Config { upstream: Some(upstream), ..Config::default() }
}

/// An upstream holding `lib/app:v1`, and a cache in front of it. Returns the manifest and its
/// digest too.
fn setup() -> (FakeUpstream, TestRegistry, Vec<u8>, Digest) {
    let origin = TestRegistry::new();
    let (manifest, digest) = origin.push_image("lib/app", "v1", OCI_MANIFEST, "one");
    let upstream = FakeUpstream::new(origin);
    let cache = TestRegistry::with_upstream(upstream_config(None), upstream.clone());
    (upstream, cache, manifest, digest)
}

/// The config and layer digests of an image manifest.
fn blobs_of(manifest: &[u8]) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    out.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()));
    out
}

fn get_manifest(t: &TestRegistry, reference: &str) -> TestResponse {
    t.get(&format!("/v2/lib/app/manifests/{reference}"), &[("Accept", ACCEPT_ALL)])
}

#[test]
fn a_first_pull_is_fetched_and_stored_and_later_pulls_need_no_upstream() {
    let (upstream, cache, manifest, digest) = setup();
    let r = get_manifest(&cache, "v1");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, manifest);
    assert_eq!(r.header("Docker-Content-Digest"), Some(digest.to_string().as_str()));
    assert_eq!(r.header("Content-Type"), Some(OCI_MANIFEST));
    for blob in blobs_of(&manifest) {
        let r = cache.get(&format!("/v2/lib/app/blobs/{blob}"), &[]);
        assert_eq!(r.status, 200, "{blob}");
        assert_eq!(Digest::sha256_of(&r.body).to_string(), blob);
        assert_eq!(r.header("Content-Length"), Some(r.body.len().to_string().as_str()));
    }

    // Everything is now in the cache's own storage: with the upstream gone, the same pull works.
    upstream.down.set(true);
    let asked = upstream.requests().len();
    let r = get_manifest(&cache, "v1");
    assert_eq!((r.status, &r.body), (200, &manifest));
    assert_eq!(get_manifest(&cache, &digest.to_string()).body, manifest);
    assert_eq!(cache.head("/v2/lib/app/manifests/v1", &[("Accept", ACCEPT_ALL)]).status, 200);
    for blob in blobs_of(&manifest) {
        let r = cache.get(&format!("/v2/lib/app/blobs/{blob}"), &[]);
        assert_eq!((r.status, Digest::sha256_of(&r.body).to_string()), (200, blob));
    }
    assert_eq!(upstream.requests().len(), asked, "the cache asked a stopped upstream");
    // And it is listed like a pushed repository.
    assert_eq!(cache.get("/v2/lib/app/tags/list", &[]).json()["tags"], serde_json::json!(["v1"]));
    assert_eq!(cache.get("/v2/_catalog", &[]).json()["repositories"], serde_json::json!(["lib/app"]));
}

#[test]
fn tags_are_rechecked_after_their_ttl_and_served_from_the_cache_when_the_upstream_fails() {
    let (upstream, cache, _, first) = setup();
    assert_eq!(get_manifest(&cache, "v1").status, 200);
    let (_, second) = upstream.registry.push_image("lib/app", "v1", OCI_MANIFEST, "two");

    // Within the TTL the cached tag is served without asking.
    let asked = upstream.requests().len();
    cache.now.set(cache.now.get() + TTL - 1);
    assert_eq!(get_manifest(&cache, "v1").header("Docker-Content-Digest"), Some(first.to_string().as_str()));
    assert_eq!(upstream.requests().len(), asked);

    // After it, the moved tag is seen: one HEAD, then the new manifest.
    cache.now.set(cache.now.get() + 2);
    assert_eq!(get_manifest(&cache, "v1").header("Docker-Content-Digest"), Some(second.to_string().as_str()));
    let new: Vec<String> = upstream.requests()[asked..].to_vec();
    assert_eq!(new, ["HEAD /v2/lib/app/manifests/v1", "GET /v2/lib/app/manifests/v1"]);

    // An unchanged tag costs one HEAD and nothing more.
    cache.now.set(cache.now.get() + TTL);
    let asked = upstream.requests().len();
    assert_eq!(get_manifest(&cache, "v1").header("Docker-Content-Digest"), Some(second.to_string().as_str()));
    assert_eq!(upstream.requests()[asked..], ["HEAD /v2/lib/app/manifests/v1"]);

    // Stale and the upstream down: the cached digest.
    cache.now.set(cache.now.get() + TTL);
    upstream.down.set(true);
    let r = get_manifest(&cache, "v1");
    assert_eq!((r.status, r.header("Docker-Content-Digest")), (200, Some(second.to_string().as_str())));
}

#[test]
fn pushes_and_deletes_are_refused_and_change_nothing() {
    let (_, cache, manifest, digest) = setup();
    assert_eq!(get_manifest(&cache, "v1").status, 200);
    let before = cache.snapshot();
    let blob = Digest::sha256_of(b"x");
    let attempts = [
        (Method::Post, "/v2/lib/app/blobs/uploads/".to_owned()),
        (Method::Post, format!("/v2/lib/app/blobs/uploads/?digest={blob}")),
        (Method::Put, "/v2/lib/app/manifests/v2".to_owned()),
        (Method::Delete, format!("/v2/lib/app/manifests/{digest}")),
        (Method::Delete, format!("/v2/lib/app/blobs/{}", blobs_of(&manifest)[0])),
        (Method::Patch, "/v2/lib/app/blobs/uploads/0123456789abcdef0123456789abcdef".to_owned()),
    ];
    for (method, path) in attempts {
        let r = cache.send(method, &path, &[("Content-Type", OCI_MANIFEST)], MemoryBody::from_bytes(manifest.clone()));
        assert_eq!((r.status, r.error_code().as_str()), (405, "UNSUPPORTED"), "{method:?} {path}");
    }
    assert_eq!(cache.snapshot(), before);
}

#[test]
fn what_the_upstream_lacks_is_unknown_and_an_unreachable_upstream_is_502() {
    let (upstream, cache, _, _) = setup();
    let r = get_manifest(&cache, "nope");
    assert_eq!((r.status, r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let missing = Digest::sha256_of(b"never pushed");
    let r = cache.get(&format!("/v2/lib/app/blobs/{missing}"), &[]);
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UNKNOWN"));
    let r = get_manifest(&cache, &missing.to_string());
    assert_eq!((r.status, r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));

    upstream.down.set(true);
    let before = cache.snapshot();
    let r = get_manifest(&cache, "v1");
    assert_eq!((r.status, r.error_code().as_str()), (502, "UNKNOWN"));
    assert_eq!(cache.snapshot(), before);
}

#[test]
fn blobs_the_upstream_corrupts_are_never_stored() {
    let (upstream, cache, manifest, _) = setup();
    let before = cache.snapshot();
    upstream.corrupt_blobs.set(true);
    let blob = &blobs_of(&manifest)[1];
    let r = cache.get(&format!("/v2/lib/app/blobs/{blob}"), &[]);
    // The client gets what the upstream sent (and rejects it by its digest); the cache keeps
    // nothing of it.
    assert_eq!(r.status, 200);
    assert_ne!(Digest::sha256_of(&r.body).to_string(), *blob);
    assert_eq!(cache.snapshot(), before);
    upstream.corrupt_blobs.set(false);
    let r = cache.get(&format!("/v2/lib/app/blobs/{blob}"), &[]);
    assert_eq!(Digest::sha256_of(&r.body).to_string(), *blob);
    upstream.down.set(true);
    assert_eq!(cache.get(&format!("/v2/lib/app/blobs/{blob}"), &[]).status, 200);
}

#[test]
fn a_manifest_list_is_resolved_for_old_clients_with_its_child_fetched_too() {
    let origin = TestRegistry::new();
    let (amd64, amd64_digest) = origin.push_image("lib/app", "a", DOCKER_MANIFEST, "amd64");
    let (arm64, arm64_digest) = origin.push_image("lib/app", "b", DOCKER_MANIFEST, "arm64");
    let list = list_body(
        DOCKER_LIST,
        &[
            (&amd64_digest, amd64.len(), DOCKER_MANIFEST, "amd64"),
            (&arm64_digest, arm64.len(), DOCKER_MANIFEST, "arm64"),
        ],
    );
    assert_eq!(origin.put_manifest("lib/app", "multi", DOCKER_LIST, &list).status, 201);
    let upstream = FakeUpstream::new(origin);
    let cache = TestRegistry::with_upstream(upstream_config(None), upstream.clone());
    // A client that reads only schema2 asks by tag: it gets the linux/amd64 image.
    let r = cache.get("/v2/lib/app/manifests/multi", &[("Accept", DOCKER_MANIFEST)]);
    assert_eq!((r.status, &r.body), (200, &amd64));
    upstream.down.set(true);
    let r = cache.get("/v2/lib/app/manifests/multi", &[("Accept", DOCKER_LIST)]);
    assert_eq!((r.status, &r.body), (200, &list));
}

#[test]
fn the_upstream_token_flow_is_followed_with_the_configured_credentials() {
    // The upstream: private, one user, tokens from its own /token.
    let open = TestRegistry::new();
    let (manifest, _) = open.push_image("lib/app", "v1", OCI_MANIFEST, "private");
    let users = format!(r#"{{"mirror":"{}"}}"#, PasswordHash::new("mirror-pw", b"salt", 10));
    let vars = [
        ("WHARF_RULES", r#"[{"repositories": "lib/*", "users": {"mirror": ["pull"]}}]"#.to_owned()),
        ("WHARF_USERS", users),
        ("WHARF_TOKEN_SECRET", "k".repeat(40)),
    ];
    let auth = AuthConfig::from_vars(&|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())).unwrap();
    let private = open.sharing_storage(Config { auth, ..Config::default() });
    let upstream = FakeUpstream::new(private);

    // Without credentials the upstream's anonymous token grants nothing: 502, nothing stored.
    let anonymous = TestRegistry::with_upstream(upstream_config(None), upstream.clone());
    let r = get_manifest(&anonymous, "v1");
    assert_eq!((r.status, r.error_code().as_str()), (502, "UNKNOWN"));
    assert_eq!(anonymous.snapshot(), TestRegistry::new().snapshot());

    let cache = TestRegistry::with_upstream(upstream_config(Some(("mirror", "mirror-pw"))), upstream.clone());
    upstream.requests.borrow_mut().clear();
    let r = get_manifest(&cache, "v1");
    assert_eq!((r.status, &r.body), (200, &manifest));
    let requests = upstream.requests();
    assert_eq!(requests[0], "GET /v2/lib/app/manifests/v1");
    assert!(requests[1].starts_with("GET /token?scope=repository%3Alib%2Fapp%3Apull&service="), "{requests:?}");
    assert!(requests[1].ends_with(" auth"), "{requests:?}");
    assert_eq!(requests[2], "GET /v2/lib/app/manifests/v1 auth");
    // The token is reused for the blobs: no second token request.
    for blob in blobs_of(&manifest) {
        assert_eq!(cache.get(&format!("/v2/lib/app/blobs/{blob}"), &[]).status, 200);
    }
    let tokens = upstream.requests().iter().filter(|r| r.starts_with("GET /token")).count();
    assert_eq!(tokens, 1, "{:?}", upstream.requests());
    assert!(upstream.requests()[3..].iter().all(|r| r.ends_with(" auth")));
}

#[test]
fn blobs_streamed_before_verification_are_not_cacheable_and_large_ones_are_stored_first() {
    let origin = TestRegistry::new();
    let small = origin.push_blob("lib/app", b"small layer");
    let large_bytes: Vec<u8> = (0..(33 * 1024 * 1024)).map(|i| (i % 251) as u8).collect();
    let large = origin.push_blob("lib/app", &large_bytes);
    let upstream = FakeUpstream::new(origin);
    let cache = TestRegistry::with_upstream(upstream_config(None), upstream.clone());

    // Small: streamed as it arrives, so not yet verified when sent: no-store. Then stored.
    let r = cache.get(&format!("/v2/lib/app/blobs/{small}"), &[]);
    assert_eq!((r.status, r.header("Cache-Control")), (200, Some("no-store")));
    let r = cache.get(&format!("/v2/lib/app/blobs/{small}"), &[]);
    assert_eq!(r.header("Cache-Control"), Some("public, max-age=31536000, immutable"));

    // Large, corrupted on the way: refused, nothing stored.
    let before = cache.snapshot();
    upstream.corrupt_blobs.set(true);
    let r = cache.get(&format!("/v2/lib/app/blobs/{large}"), &[]);
    assert_eq!((r.status, r.error_code().as_str()), (502, "UNKNOWN"));
    assert_eq!(cache.snapshot(), before);
    // Large, intact: stored first, then served from the cache's own storage, verified.
    upstream.corrupt_blobs.set(false);
    let r = cache.get(&format!("/v2/lib/app/blobs/{large}"), &[]);
    assert_eq!((r.status, r.header("Cache-Control")), (200, Some("public, max-age=31536000, immutable")));
    assert!(r.body == large_bytes);
    upstream.down.set(true);
    assert_eq!(cache.head(&format!("/v2/lib/app/blobs/{large}"), &[]).status, 200);
}

#[test]
fn credentials_never_go_to_a_plain_http_realm_of_an_https_upstream() {
    let open = TestRegistry::new();
    open.push_image("lib/app", "v1", OCI_MANIFEST, "private");
    let users = format!(r#"{{"mirror":"{}"}}"#, PasswordHash::new("mirror-pw", b"salt", 10));
    let vars = [
        ("WHARF_RULES", r#"[{"repositories": "lib/*", "users": {"mirror": ["pull"]}}]"#.to_owned()),
        ("WHARF_USERS", users),
        ("WHARF_TOKEN_SECRET", "k".repeat(40)),
        ("WHARF_REALM", "http://upstream.test/token".to_owned()),
    ];
    let auth = AuthConfig::from_vars(&|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())).unwrap();
    let upstream = FakeUpstream::new(open.sharing_storage(Config { auth, ..Config::default() }));
    let cache = TestRegistry::with_upstream(upstream_config(Some(("mirror", "mirror-pw"))), upstream.clone());
    let r = get_manifest(&cache, "v1");
    assert_eq!((r.status, r.error_code().as_str()), (502, "UNKNOWN"));
    assert_eq!(upstream.requests(), ["GET /v2/lib/app/manifests/v1"], "nothing but the first request");
}

#[test]
fn concurrent_cold_pulls_of_one_blob_fetch_it_upstream_once() {
    let (upstream, cache, manifest, _) = setup();
    assert_eq!(get_manifest(&cache, "v1").status, 200);
    for blob in blobs_of(&manifest) {
        let path = format!("/v2/lib/app/blobs/{blob}");
        let pulls =
            (0..5).map(|_| cache.respond("https://registry.test", Method::Get, &path, &[], MemoryBody::empty()));
        let answers = futures_executor::block_on(futures_util::future::join_all(pulls));
        for r in &answers {
            assert_eq!(r.status, 200, "{blob}");
            assert_eq!(Digest::sha256_of(&r.body).to_string(), blob);
        }
        let fetched = upstream.requests().iter().filter(|r| r.starts_with("GET ") && r.contains(&blob)).count();
        assert_eq!(fetched, 1, "{blob}: {:?}", upstream.requests());
    }
}
