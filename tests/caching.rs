//! Pulls made cheap: what caches may keep (Cache-Control by visibility, ETags, 304s, If-Range),
//! and how few storage round trips a pull by tag costs.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use wharf::Config;
use wharf::auth::AuthConfig;
use wharf::auth::secret::PasswordHash;
use wharf::base::http::{MemoryBody, Method};
use wharf::base::names::Digest;

const IMMUTABLE: &str = "max-age=31536000, immutable";

#[test]
fn a_head_by_tag_is_answered_from_the_tag_alone() {
    let t = TestRegistry::new();
    let (manifest, digest) = t.push_image("r", "v1", OCI_MANIFEST, "a");
    let before = t.objects.operations();
    let r = t.head("/v2/r/manifests/v1", &[("Accept", ACCEPT_ALL)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some(OCI_MANIFEST));
    assert_eq!(r.header("Content-Length"), Some(manifest.len().to_string().as_str()));
    assert_eq!(r.header("Docker-Content-Digest"), Some(digest.to_string().as_str()));
    assert!(r.body.is_empty());
    // Negotiation applies the same way: an OCI manifest for a client that only reads schema2.
    let r = t.head("/v2/r/manifests/v1", &[("Accept", DOCKER_MANIFEST)]);
    assert_eq!(r.status, 404);
    assert_eq!(t.objects.operations(), before, "R2 was asked");
}

#[test]
fn a_pull_by_tag_costs_one_r2_read_and_then_none() {
    let pusher = TestRegistry::new();
    let (manifest, _) = pusher.push_image("r", "v1", OCI_MANIFEST, "a");
    let accept = [("Accept", ACCEPT_ALL)];
    // The pushing isolate remembers what it wrote.
    let before = pusher.objects.operations();
    assert_eq!(pusher.get("/v2/r/manifests/v1", &accept).body, manifest);
    assert_eq!(pusher.objects.operations(), before);
    // Another isolate: one KV read and one R2 read the first time, nothing after.
    let other = pusher.sharing_storage(Config::default());
    let before = other.objects.operations();
    assert_eq!(other.get("/v2/r/manifests/v1", &accept).body, manifest);
    assert_eq!(other.objects.operations(), before + 1);
    assert_eq!(other.get("/v2/r/manifests/v1", &accept).body, manifest);
    assert_eq!(other.objects.operations(), before + 1);
    // What it remembers expires: a tag moved elsewhere is seen after WHARF_TAG_MEMO_SECONDS.
    let (moved, _) = pusher.push_image("r", "v1", OCI_MANIFEST, "b");
    assert_eq!(other.get("/v2/r/manifests/v1", &accept).body, manifest);
    other.now.set(other.now.get() + Config::default().tag_memo_secs);
    assert_eq!(other.get("/v2/r/manifests/v1", &accept).body, moved);
}

#[test]
fn a_manifest_list_by_tag_for_an_old_client_still_resolves_its_image() {
    let t = TestRegistry::new();
    let (amd64, d) = t.push_image("r", "amd64", DOCKER_MANIFEST, "amd64");
    let list = list_body(DOCKER_LIST, &[(&d, amd64.len(), DOCKER_MANIFEST, "amd64")]);
    assert_eq!(t.put_manifest("r", "multi", DOCKER_LIST, &list).status, 201);
    let r = t.head("/v2/r/manifests/multi", &[("Accept", DOCKER_MANIFEST)]);
    assert_eq!((r.status, r.header("Docker-Content-Digest")), (200, Some(d.to_string().as_str())));
    assert_eq!(r.header("Content-Length"), Some(amd64.len().to_string().as_str()));
}

#[test]
fn content_by_digest_is_immutable_and_tags_are_revalidated() {
    let t = TestRegistry::new();
    let (manifest, digest) = t.push_image("r", "v1", OCI_MANIFEST, "a");
    let blob = t.push_blob("r", b"some layer");
    let accept = [("Accept", ACCEPT_ALL)];
    let by_tag = t.get("/v2/r/manifests/v1", &accept);
    assert_eq!(by_tag.header("Cache-Control"), Some("public, no-cache"));
    assert_eq!(by_tag.header("ETag"), Some(format!("\"{digest}\"").as_str()));
    assert_eq!(by_tag.header("Vary"), Some("Accept"));
    let by_digest = t.get(&format!("/v2/r/manifests/{digest}"), &accept);
    assert_eq!(by_digest.body, manifest);
    assert_eq!(by_digest.header("Cache-Control"), Some(format!("public, {IMMUTABLE}").as_str()));
    let b = t.get(&format!("/v2/r/blobs/{blob}"), &[]);
    assert_eq!(b.header("Cache-Control"), Some(format!("public, {IMMUTABLE}").as_str()));
    assert_eq!(b.header("ETag"), Some(format!("\"{blob}\"").as_str()));
    // Errors are never kept.
    assert_eq!(t.get("/v2/r/manifests/nope", &accept).header("Cache-Control"), Some("no-store"));

    let short = TestRegistry::with_config(Config { tag_max_age_secs: 30, ..Config::default() });
    short.push_image("r", "v1", OCI_MANIFEST, "a");
    assert_eq!(short.get("/v2/r/manifests/v1", &accept).header("Cache-Control"), Some("public, max-age=30"));
}

#[test]
fn revalidation_with_the_digest_is_304_without_a_body() {
    let t = TestRegistry::new();
    let (_, digest) = t.push_image("r", "v1", OCI_MANIFEST, "a");
    let etag = format!("\"{digest}\"");
    for path in ["/v2/r/manifests/v1".to_owned(), format!("/v2/r/manifests/{digest}")] {
        let r = t.get(&path, &[("Accept", ACCEPT_ALL), ("If-None-Match", &etag)]);
        assert_eq!((r.status, r.body.len()), (304, 0), "{path}");
        assert_eq!(r.header("ETag"), Some(etag.as_str()));
        assert!(r.header("Cache-Control").is_some());
        // Typed as its 200 is (and so never marked encoded by a compressing front).
        assert_eq!(r.header("Content-Type"), Some(OCI_MANIFEST), "{path}");
        assert_eq!(r.header("Content-Encoding"), None, "{path}");
    }
    // No 304 for what does not exist, whatever the client holds.
    let gone = Digest::sha256_of(b"never pushed");
    for condition in ["*".to_owned(), format!("\"{gone}\"")] {
        let r = t.get(&format!("/v2/r/manifests/{gone}"), &[("Accept", ACCEPT_ALL), ("If-None-Match", &condition)]);
        assert_eq!(r.status, 404, "{condition}");
    }
    let blob = t.push_blob("r", b"layer bytes");
    let r = t.get(&format!("/v2/r/blobs/{blob}"), &[("If-None-Match", &format!("\"{blob}\""))]);
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!((r.header("Content-Type"), r.header("Content-Encoding")), (Some("application/octet-stream"), None));
    let r = t.get(&format!("/v2/r/blobs/{blob}"), &[("If-None-Match", "\"sha256:other\"")]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"layer bytes"[..]));
}

#[test]
fn a_range_is_honoured_only_while_if_range_names_the_blob() {
    let t = TestRegistry::new();
    let blob = t.push_blob("r", b"0123456789");
    let path = format!("/v2/r/blobs/{blob}");
    let etag = format!("\"{blob}\"");
    let r = t.get(&path, &[("Range", "bytes=2-4"), ("If-Range", &etag)]);
    assert_eq!((r.status, r.body.as_slice()), (206, &b"234"[..]));
    for other in ["\"sha256:other\"", "Wed, 21 Oct 2015 07:28:00 GMT"] {
        let r = t.get(&path, &[("Range", "bytes=2-4"), ("If-Range", other)]);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]), "{other}");
    }
}

#[test]
fn protected_repositories_are_private_to_caches() {
    let users = format!(r#"{{"alice":"{}"}}"#, PasswordHash::new("pw", b"salt", 10));
    let rules = r#"[{"repositories": "public/*", "anonymous": ["pull"], "users": {"alice": ["push"]}},
                    {"repositories": "team/*", "users": {"alice": ["pull", "push"]}}]"#;
    let vars = [("WHARF_RULES", rules.to_owned()), ("WHARF_USERS", users), ("WHARF_TOKEN_SECRET", "s".repeat(40))];
    let auth = AuthConfig::from_vars(&|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())).unwrap();
    let t = TestRegistry::with_config(Config { auth, ..Config::default() });
    let alice = format!("Basic {}", STANDARD.encode("alice:pw"));
    let push = |repo: &str| {
        let d = Digest::sha256_of(repo.as_bytes());
        let path = format!("/v2/{repo}/blobs/uploads/?digest={d}");
        let r =
            t.send(Method::Post, &path, &[("Authorization", &alice)], MemoryBody::from_bytes(repo.as_bytes().to_vec()));
        assert_eq!(r.status, 201);
        d
    };
    let public = push("public/app");
    let team = push("team/app");
    let r = t.get(&format!("/v2/public/app/blobs/{public}"), &[]);
    assert_eq!((r.status, r.header("Cache-Control")), (200, Some(format!("public, {IMMUTABLE}").as_str())));
    let r = t.get(&format!("/v2/team/app/blobs/{team}"), &[("Authorization", &alice)]);
    assert_eq!((r.status, r.header("Cache-Control")), (200, Some(format!("private, {IMMUTABLE}").as_str())));
    let r = t.get(&format!("/v2/team/app/blobs/{team}"), &[]);
    assert_eq!((r.status, r.header("Cache-Control")), (401, Some("no-store")));
}

#[test]
fn a_blob_pull_reads_only_its_bytes_once_its_link_is_known() {
    let pusher = TestRegistry::new();
    let d = pusher.push_blob("r", b"layer bytes");
    let path = format!("/v2/r/blobs/{d}");
    let other = pusher.sharing_storage(Config { delete_enabled: true, ..Config::default() });
    let before = other.objects.operations();
    assert_eq!(other.get(&path, &[]).body, b"layer bytes");
    assert_eq!(other.objects.operations(), before + 2, "the link, then the bytes");
    assert_eq!(other.get(&path, &[]).body, b"layer bytes");
    assert_eq!(other.objects.operations(), before + 3, "the bytes only");
    // A delete through this isolate is seen at once.
    assert_eq!(other.delete(&path).status, 202);
    assert_eq!(other.get(&path, &[]).status, 404);
}
