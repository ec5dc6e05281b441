//! Native integration tests of the registry API over the in-memory backends, one behaviour per
//! test, named after it. The bad-input catalogue is at the end.

mod common;

use common::*;
use wharf::Config;
use wharf::base::http::{MemoryBody, Method};
use wharf::base::names::Digest;
use wharf::oci::uploads::{MAX_PART_SIZE, PART_SIZE};

// ---------------------------------------------------------------- base

#[test]
fn base_endpoint_answers_200_with_the_api_version() {
    let t = TestRegistry::new();
    let r = t.get("/v2/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Docker-Distribution-API-Version"), Some("registry/2.0"));
}

#[test]
fn unknown_paths_get_an_oci_error_body() {
    let t = TestRegistry::new();
    let r = t.get("/v3/", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.error_code(), "UNSUPPORTED");
}

// ---------------------------------------------------------------- manifest GET / HEAD

#[test]
fn get_by_tag_returns_the_pushed_bytes_and_headers() {
    let t = TestRegistry::new();
    let (body, digest) = t.push_image("a/b/c/d", "v1", OCI_MANIFEST, "x");
    let r = t.get("/v2/a/b/c/d/manifests/v1", &[("Accept", OCI_MANIFEST)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    assert_eq!(r.header("Content-Type"), Some(OCI_MANIFEST));
    assert_eq!(r.header("Content-Length"), Some(body.len().to_string().as_str()));
    assert_eq!(r.header("Docker-Content-Digest"), Some(digest.to_string().as_str()));
    assert_eq!(r.header("ETag"), Some(format!("\"{digest}\"").as_str()));
}

#[test]
fn get_by_digest_returns_the_pushed_bytes() {
    let t = TestRegistry::new();
    let (body, digest) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let r = t.get(&format!("/v2/r/manifests/{digest}"), &[("Accept", OCI_MANIFEST)]);
    assert_eq!((r.status, r.body), (200, body));
}

#[test]
fn head_has_the_headers_of_get_and_no_body() {
    let t = TestRegistry::new();
    let (body, digest) = t.push_image("r", "v1", DOCKER_MANIFEST, "x");
    let r = t.head("/v2/r/manifests/v1", &[("Accept", DOCKER_MANIFEST)]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("Content-Length"), Some(body.len().to_string().as_str()));
    assert_eq!(r.header("Docker-Content-Digest"), Some(digest.to_string().as_str()));
    assert_eq!(r.header("Content-Type"), Some(DOCKER_MANIFEST));
}

/// Cloudflare's front, and `wrangler dev`'s emulation of it, mark answers of an untyped or
/// compressible type `Content-Encoding: gzip` for clients that accept it, content or not.
#[test]
fn answers_without_content_never_leave_their_coding_to_a_front() {
    let t = TestRegistry::new();
    t.push_image("r", "v1", DOCKER_MANIFEST, "x");
    let blob = t.push_blob("r", b"bytes");
    let missing = Digest::sha256_of(b"never pushed");
    // A HEAD of a JSON answer keeps the GET's type and says its coding is none.
    for path in ["/v2/".to_owned(), "/v2/r/manifests/nope".to_owned(), format!("/v2/r/blobs/{missing}")] {
        let r = t.head(&path, &[]);
        assert_eq!(
            (r.header("Content-Type"), r.header("Content-Encoding")),
            (Some("application/json"), Some("identity")),
            "{path}"
        );
    }
    // With a body the front may compress, as Cloudflare does.
    assert_eq!(t.get("/v2/", &[]).header("Content-Encoding"), None);
    // A HEAD of a manifest or blob is typed as its content, which no front compresses.
    let manifest = t.head("/v2/r/manifests/v1", &[("Accept", DOCKER_MANIFEST)]);
    let blob = t.head(&format!("/v2/r/blobs/{blob}"), &[]);
    for r in [manifest, blob] {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Encoding"), None);
    }
    // Answers that carry no representation are typed as bytes.
    let started = t.send(Method::Post, "/v2/r/blobs/uploads/", &[], MemoryBody::empty());
    let location = started.header("Location").unwrap().to_owned();
    let status = t.get(&location, &[]);
    for (r, code) in [(started, 202), (status, 204)] {
        assert_eq!(r.status, code);
        assert_eq!((r.header("Content-Type"), r.header("Content-Encoding")), (Some("application/octet-stream"), None));
    }
}

#[test]
fn unknown_tag_or_digest_is_manifest_unknown() {
    let t = TestRegistry::new();
    t.push_image("r", "v1", OCI_MANIFEST, "x");
    for path in ["/v2/r/manifests/nope".to_string(), format!("/v2/r/manifests/{}", Digest::sha256_of(b"none"))] {
        let r = t.get(&path, &[("Accept", OCI_MANIFEST)]);
        assert_eq!((r.status, r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"), "{path}");
    }
    let r = t.head("/v2/other/manifests/v1", &[("Accept", OCI_MANIFEST)]);
    assert_eq!(r.status, 404);
}

#[test]
fn manifests_are_scoped_to_their_repository() {
    let t = TestRegistry::new();
    let (_, digest) = t.push_image("r1", "v1", OCI_MANIFEST, "x");
    let r = t.get(&format!("/v2/r2/manifests/{digest}"), &[("Accept", OCI_MANIFEST)]);
    assert_eq!(r.status, 404);
}

#[test]
fn oci_manifest_not_accepted_is_manifest_unknown_with_distributions_message() {
    let t = TestRegistry::new();
    t.push_image("r", "v1", OCI_MANIFEST, "x");
    for accept in [vec![], vec![("Accept", DOCKER_MANIFEST)], vec![("Accept", "application/json")]] {
        let r = t.get("/v2/r/manifests/v1", &accept);
        assert_eq!(r.status, 404);
        assert_eq!(r.error_code(), "MANIFEST_UNKNOWN");
        assert_eq!(
            r.json()["errors"][0]["message"],
            "OCI manifest found, but accept header does not support OCI manifests"
        );
    }
}

#[test]
fn accept_is_read_from_every_header_and_every_comma_separated_entry() {
    let t = TestRegistry::new();
    t.push_image("r", "v1", OCI_MANIFEST, "x");
    let headers = [
        ("Accept", "text/html"),
        ("Accept", "application/json;q=0.9, application/vnd.oci.image.manifest.v1+json; q=0.1"),
    ];
    assert_eq!(t.get("/v2/r/manifests/v1", &headers).status, 200);
}

fn push_index(
    t: &TestRegistry,
    repo: &str,
    tag: &str,
    list_type: &str,
    child_type: &str,
    archs: &[&str],
) -> (Vec<u8>, Vec<Digest>) {
    let mut children = Vec::new();
    for arch in archs {
        let body = t.image_manifest(repo, child_type, arch);
        let d = Digest::sha256_of(&body);
        assert_eq!(t.put_manifest(repo, &d.to_string(), child_type, &body).status, 201);
        children.push((d, body.len()));
    }
    let refs: Vec<_> = children.iter().zip(archs).map(|((d, n), a)| (d, *n, child_type, *a)).collect();
    let body = list_body(list_type, &refs);
    let r = t.put_manifest(repo, tag, list_type, &body);
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    (body, children.into_iter().map(|(d, _)| d).collect())
}

#[test]
fn oci_index_not_accepted_is_manifest_unknown() {
    let t = TestRegistry::new();
    push_index(&t, "r", "multi", OCI_INDEX, OCI_MANIFEST, &["amd64", "arm64"]);
    let r = t.get("/v2/r/manifests/multi", &[("Accept", OCI_MANIFEST)]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["errors"][0]["message"], "OCI index found, but accept header does not support OCI indexes");
    assert_eq!(t.get("/v2/r/manifests/multi", &[("Accept", OCI_INDEX)]).status, 200);
}

#[test]
fn manifest_list_by_tag_for_a_client_without_list_support_serves_the_linux_amd64_child() {
    let t = TestRegistry::new();
    let (_, children) = push_index(&t, "r", "multi", DOCKER_LIST, DOCKER_MANIFEST, &["arm64", "amd64"]);
    let r = t.get("/v2/r/manifests/multi", &[("Accept", DOCKER_MANIFEST)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Docker-Content-Digest"), Some(children[1].to_string().as_str()));
    assert_eq!(r.header("Content-Type"), Some(DOCKER_MANIFEST));
    assert_eq!(Digest::sha256_of(&r.body), children[1]);
    let head = t.head("/v2/r/manifests/multi", &[("Accept", DOCKER_MANIFEST)]);
    assert_eq!(head.header("Docker-Content-Digest"), Some(children[1].to_string().as_str()));
}

#[test]
fn manifest_list_is_served_as_is_to_clients_that_accept_lists() {
    let t = TestRegistry::new();
    let (body, _) = push_index(&t, "r", "multi", DOCKER_LIST, DOCKER_MANIFEST, &["amd64"]);
    let r = t.get("/v2/r/manifests/multi", &[("Accept", ACCEPT_ALL)]);
    assert_eq!((r.status, r.body), (200, body));
}

#[test]
fn manifest_list_by_digest_is_never_rewritten() {
    let t = TestRegistry::new();
    let (body, _) = push_index(&t, "r", "multi", DOCKER_LIST, DOCKER_MANIFEST, &["amd64"]);
    let r = t.get(&format!("/v2/r/manifests/{}", Digest::sha256_of(&body)), &[("Accept", DOCKER_MANIFEST)]);
    assert_eq!((r.status, r.body), (200, body));
}

#[test]
fn manifest_list_without_a_linux_amd64_child_is_manifest_unknown_for_list_unaware_clients() {
    let t = TestRegistry::new();
    push_index(&t, "r", "multi", DOCKER_LIST, DOCKER_MANIFEST, &["arm64", "s390x"]);
    let r = t.get("/v2/r/manifests/multi", &[("Accept", DOCKER_MANIFEST)]);
    assert_eq!((r.status, r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
}

#[test]
fn manifest_list_rewrite_to_schema2_for_a_client_without_schema2_support_is_manifest_invalid() {
    let t = TestRegistry::new();
    push_index(&t, "r", "multi", DOCKER_LIST, DOCKER_MANIFEST, &["amd64"]);
    let r = t.get("/v2/r/manifests/multi", &[("Accept", OCI_MANIFEST)]);
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_INVALID"));
}

#[test]
fn if_none_match_with_the_digest_quoted_or_bare_is_304() {
    let t = TestRegistry::new();
    let (_, digest) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    for etag in [digest.to_string(), format!("\"{digest}\"")] {
        let r = t.get("/v2/r/manifests/v1", &[("Accept", OCI_MANIFEST), ("If-None-Match", &etag)]);
        assert_eq!(r.status, 304, "{etag}");
        assert!(r.body.is_empty());
    }
    let other = t.get("/v2/r/manifests/v1", &[("Accept", OCI_MANIFEST), ("If-None-Match", "\"sha256:other\"")]);
    assert_eq!(other.status, 200);
}

// ---------------------------------------------------------------- manifest PUT

#[test]
fn put_answers_201_with_location_and_digest() {
    let t = TestRegistry::new();
    let body = t.image_manifest("r", OCI_MANIFEST, "x");
    let r = t.put_manifest("r", "v1", OCI_MANIFEST, &body);
    let d = Digest::sha256_of(&body);
    assert_eq!(r.status, 201);
    assert_eq!(r.header("Location"), Some(format!("/v2/r/manifests/{d}").as_str()));
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.to_string().as_str()));
}

#[test]
fn put_by_digest_stores_without_a_tag() {
    let t = TestRegistry::new();
    let body = t.image_manifest("r", OCI_MANIFEST, "x");
    let d = Digest::sha256_of(&body);
    assert_eq!(t.put_manifest("r", &d.to_string(), OCI_MANIFEST, &body).status, 201);
    assert!(t.kv.snapshot().is_empty());
    assert_eq!(t.get(&format!("/v2/r/manifests/{d}"), &[("Accept", OCI_MANIFEST)]).body, body);
}

#[test]
fn put_by_sha512_digest_is_verified_with_sha512() {
    let t = TestRegistry::new();
    let body = t.image_manifest("r", OCI_MANIFEST, "x");
    let d512 = Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap().recompute(&body);
    let r = t.put_manifest("r", &d512.to_string(), OCI_MANIFEST, &body);
    assert_eq!(r.status, 201);
    assert_eq!(r.header("Docker-Content-Digest"), Some(d512.to_string().as_str()));
    assert_eq!(t.get(&format!("/v2/r/manifests/{d512}"), &[("Accept", OCI_MANIFEST)]).body, body);
}

#[test]
fn tags_set_by_a_sha512_push_name_the_sha512_digest_and_sha256_ones_keep_sha256() {
    let t = TestRegistry::new();
    let body = t.image_manifest("r", OCI_MANIFEST, "x");
    let d256 = Digest::sha256_of(&body);
    let d512 = Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap().recompute(&body);
    assert_eq!(t.put_manifest("r", &format!("{d256}?tag=old"), OCI_MANIFEST, &body).status, 201);
    let r = t.put_manifest("r", &format!("{d512}?tag=a&tag=b"), OCI_MANIFEST, &body);
    assert_eq!(r.status, 201);
    assert_eq!(r.header("Docker-Content-Digest"), Some(d512.to_string().as_str()));
    assert_eq!(r.header("Location"), Some(format!("/v2/r/manifests/{d512}").as_str()));
    // Each tag parameter is confirmed, one OCI-Tag header per tag.
    let confirmed: Vec<&str> = r.headers.iter().filter(|(n, _)| *n == "OCI-Tag").map(|(_, v)| v.as_str()).collect();
    assert_eq!(confirmed, ["a", "b"]);
    for tag in ["a", "b"] {
        let path = format!("/v2/r/manifests/{tag}");
        let head = t.head(&path, &[("Accept", OCI_MANIFEST)]);
        assert_eq!(head.header("Docker-Content-Digest"), Some(d512.to_string().as_str()), "HEAD {tag}");
        let get = t.get(&path, &[("Accept", OCI_MANIFEST)]);
        assert_eq!((get.status, &get.body), (200, &body));
        assert_eq!(get.header("Docker-Content-Digest"), Some(d512.to_string().as_str()), "GET {tag}");
        assert_eq!(get.header("ETag"), Some(format!("\"{d512}\"").as_str()));
    }
    // A fresh isolate (no memo) reads the same from storage.
    let fresh = t.sharing_storage(Config::default());
    let head = fresh.head("/v2/r/manifests/a", &[("Accept", OCI_MANIFEST)]);
    assert_eq!(head.header("Docker-Content-Digest"), Some(d512.to_string().as_str()));
    let old = fresh.get("/v2/r/manifests/old", &[("Accept", OCI_MANIFEST)]);
    assert_eq!(old.header("Docker-Content-Digest"), Some(d256.to_string().as_str()));
    // A push without tag parameters confirms none.
    let plain = t.put_manifest("r", &d512.to_string(), OCI_MANIFEST, &body);
    assert_eq!((plain.status, plain.header("OCI-Tag")), (201, None));
    assert_eq!(plain.header("Docker-Content-Digest"), Some(d512.to_string().as_str()));
}

#[test]
fn put_with_content_type_parameters_stores_the_bare_media_type() {
    let t = TestRegistry::new();
    let body = t.image_manifest("r", OCI_MANIFEST, "x");
    let r = t.put_manifest("r", "v1", &format!("{OCI_MANIFEST}; charset=utf-8"), &body);
    assert_eq!(r.status, 201);
    assert_eq!(t.get("/v2/r/manifests/v1", &[("Accept", OCI_MANIFEST)]).header("Content-Type"), Some(OCI_MANIFEST));
}

#[test]
fn re_put_of_the_same_bytes_is_idempotent_and_a_second_tag_is_added() {
    let t = TestRegistry::new();
    let (body, d) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let before = t.snapshot();
    assert_eq!(t.put_manifest("r", "v1", OCI_MANIFEST, &body).status, 201);
    assert_eq!(t.get("/v2/r/manifests/v1", &[("Accept", OCI_MANIFEST)]).body, body);
    assert_eq!(t.snapshot(), before);
    assert_eq!(t.put_manifest("r", "v2", OCI_MANIFEST, &body).status, 201);
    for tag in ["v1", "v2"] {
        let r = t.head(&format!("/v2/r/manifests/{tag}"), &[("Accept", OCI_MANIFEST)]);
        assert_eq!(r.header("Docker-Content-Digest"), Some(d.to_string().as_str()));
    }
}

#[test]
fn a_tag_moves_to_the_latest_push() {
    let t = TestRegistry::new();
    t.push_image("r", "latest", OCI_MANIFEST, "one");
    let (body, _) = t.push_image("r", "latest", OCI_MANIFEST, "two");
    assert_eq!(t.get("/v2/r/manifests/latest", &[("Accept", OCI_MANIFEST)]).body, body);
}

#[test]
fn put_with_a_missing_layer_is_manifest_blob_unknown_naming_the_digest() {
    let t = TestRegistry::new();
    let body = t.image_manifest("r", OCI_MANIFEST, "x");
    // The same manifest in another repository: its blobs are not there.
    let before = t.snapshot();
    let r = t.put_manifest("elsewhere", "v1", OCI_MANIFEST, &body);
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    let detail = r.json()["errors"][0]["detail"].as_str().unwrap().to_owned();
    assert!(String::from_utf8_lossy(&body).contains(&detail));
    assert_eq!(t.snapshot(), before);
}

#[test]
fn put_of_an_index_with_a_missing_child_is_manifest_blob_unknown() {
    let t = TestRegistry::new();
    let ghost = Digest::sha256_of(b"ghost");
    let body = list_body(OCI_INDEX, &[(&ghost, 10, OCI_MANIFEST, "amd64")]);
    let before = t.snapshot();
    let r = t.put_manifest("r", "v1", OCI_INDEX, &body);
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    assert_eq!(r.json()["errors"][0]["detail"], ghost.to_string());
    assert_eq!(t.snapshot(), before);
}

/// The codes and details of an OCI error body, in order.
fn errors_of(r: &TestResponse) -> Vec<(String, serde_json::Value)> {
    let v = r.json();
    v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["code"].as_str().unwrap().to_owned(), e["detail"].clone()))
        .collect()
}

fn unknown(d: &dyn std::fmt::Display) -> (String, serde_json::Value) {
    ("MANIFEST_BLOB_UNKNOWN".to_owned(), serde_json::Value::String(d.to_string()))
}

/// An OCI image manifest over the given (media type, digest, size) config and layers.
fn manifest_of(config: (&str, &str, u64), layers: &[(&str, &str, u64)]) -> String {
    let descriptor = |(m, d, n): (&str, &str, u64)| format!(r#"{{"mediaType":"{m}","digest":"{d}","size":{n}}}"#);
    let layers: Vec<String> = layers.iter().map(|l| descriptor(*l)).collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
        descriptor(config),
        layers.join(",")
    )
}

const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[test]
fn put_reports_every_missing_blob_in_one_answer_in_document_order() {
    let t = TestRegistry::new();
    let present = t.push_blob("r", b"present layer");
    let (c, l1, l3) = (Digest::sha256_of(b"c"), Digest::sha256_of(b"l1"), Digest::sha256_of(b"l3"));
    let body = manifest_of(
        (CONFIG, &c.to_string(), 1),
        &[(LAYER, &l1.to_string(), 2), (LAYER, &present.to_string(), 13), (LAYER, &l3.to_string(), 2)],
    );
    let before = t.snapshot();
    let r = t.put_manifest("r", "v1", OCI_MANIFEST, body.as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    assert_eq!(errors_of(&r), [unknown(&c), unknown(&l1), unknown(&l3)]);
    assert_eq!(t.snapshot(), before);
}

#[test]
fn put_of_an_index_reports_every_missing_child() {
    let t = TestRegistry::new();
    let (_, present) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let (g1, g2) = (Digest::sha256_of(b"ghost 1"), Digest::sha256_of(b"ghost 2"));
    let body = list_body(
        OCI_INDEX,
        &[(&g1, 10, OCI_MANIFEST, "amd64"), (&present, 10, OCI_MANIFEST, "arm"), (&g2, 10, OCI_MANIFEST, "arm64")],
    );
    let before = t.snapshot();
    let r = t.put_manifest("r", "multi", OCI_INDEX, &body);
    assert_eq!(r.status, 400);
    assert_eq!(errors_of(&r), [unknown(&g1), unknown(&g2)]);
    assert_eq!(t.snapshot(), before);
}

#[test]
fn a_malformed_reference_digest_is_digest_invalid_and_manifest_blob_unknown_beside_the_missing_ones() {
    let t = TestRegistry::new();
    let c = t.push_blob("r", b"config");
    let missing = Digest::sha256_of(b"missing");
    let bad = "sha256:NOT-HEX";
    let body = manifest_of((CONFIG, &c.to_string(), 6), &[(LAYER, bad, 1), (LAYER, &missing.to_string(), 1)]);
    let before = t.snapshot();
    let r = t.put_manifest("r", "v1", OCI_MANIFEST, body.as_bytes());
    assert_eq!(r.status, 400);
    let errors = errors_of(&r);
    let codes: Vec<&str> = errors.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(codes, ["DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"]);
    assert_eq!(errors[0].1["digest"], bad);
    assert_eq!(errors[1].1, bad);
    assert_eq!(errors[2], unknown(&missing));
    assert_eq!(t.snapshot(), before);
    // A malformed config digest too, first in the document.
    let body = manifest_of(("x", "sha512:short", 1), &[(LAYER, &missing.to_string(), 1)]);
    let r = t.put_manifest("r", "v1", OCI_MANIFEST, body.as_bytes());
    let codes: Vec<String> = errors_of(&r).into_iter().map(|(c, _)| c).collect();
    assert_eq!(codes, ["DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"]);
    assert_eq!(t.snapshot(), before);
}

#[test]
fn a_descriptor_whose_size_is_not_its_blobs_is_manifest_blob_unknown_with_both_sizes() {
    let t = TestRegistry::new();
    let config = t.push_blob("r", b"{}");
    let layer_bytes = vec![7u8; 1440];
    let layer = t.push_blob("r", &layer_bytes);
    let lie = manifest_of((CONFIG, &config.to_string(), 2), &[(LAYER, &layer.to_string(), i64::MAX as u64)]);
    let before = t.snapshot();
    let r = t.put_manifest("r", "v1", OCI_MANIFEST, lie.as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    let detail = &r.json()["errors"][0]["detail"];
    assert_eq!(detail["digest"], layer.to_string());
    assert_eq!((detail["size"].as_u64(), detail["blobSize"].as_u64()), (Some(i64::MAX as u64), Some(1440)));
    assert_eq!(t.snapshot(), before);
    // The config is held to its size as well, and each liar is named.
    let both = manifest_of((CONFIG, &config.to_string(), 3), &[(LAYER, &layer.to_string(), 0)]);
    let r = t.put_manifest("r", "v1", OCI_MANIFEST, both.as_bytes());
    let details: Vec<(u64, u64)> =
        errors_of(&r).iter().map(|(_, d)| (d["size"].as_u64().unwrap(), d["blobSize"].as_u64().unwrap())).collect();
    assert_eq!(details, [(3, 2), (0, 1440)]);
    assert_eq!(t.snapshot(), before);
    // The truth is accepted.
    let truth = manifest_of((CONFIG, &config.to_string(), 2), &[(LAYER, &layer.to_string(), 1440)]);
    assert_eq!(t.put_manifest("r", "v1", OCI_MANIFEST, truth.as_bytes()).status, 201);
}

/// A manifest (OCI or schema2) whose only layer has `layer_type`, `urls` (a JSON array, or
/// nothing) and the digest of bytes never uploaded; the config is pushed.
fn with_layer_from_urls(t: &TestRegistry, media_type: &str, layer_type: &str, urls: Option<&str>) -> (String, Digest) {
    let config = t.push_blob("r", b"{}");
    let config_type =
        if media_type == DOCKER_MANIFEST { "application/vnd.docker.container.image.v1+json" } else { CONFIG };
    let layer = Digest::sha256_of(format!("{layer_type} {urls:?}").as_bytes());
    let urls = urls.map(|u| format!(r#","urls":{u}"#)).unwrap_or_default();
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"{config_type}","digest":"{config}","size":2}},"layers":[{{"mediaType":"{layer_type}","digest":"{layer}","size":1440{urls}}}]}}"#
    );
    (body, layer)
}

const NONDISTRIBUTABLE: [&str; 3] = [
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];
const FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

#[test]
fn a_non_distributable_layer_with_urls_needs_no_blob_and_the_manifest_is_served() {
    let t = TestRegistry::new();
    let cases = NONDISTRIBUTABLE.iter().map(|l| (OCI_MANIFEST, *l)).chain([(DOCKER_MANIFEST, FOREIGN)]);
    for (i, (media_type, layer_type)) in cases.enumerate() {
        let (body, _) = with_layer_from_urls(&t, media_type, layer_type, Some(r#"["https://example.com/layer"]"#));
        let tag = format!("nd{i}");
        let r = t.put_manifest("r", &tag, media_type, body.as_bytes());
        assert_eq!(r.status, 201, "{layer_type}: {:?}", String::from_utf8_lossy(&r.body));
        let d = Digest::sha256_of(body.as_bytes());
        for reference in [tag.clone(), d.to_string()] {
            let g = t.get(&format!("/v2/r/manifests/{reference}"), &[("Accept", media_type)]);
            assert_eq!((g.status, g.body.as_slice()), (200, body.as_bytes()), "{reference}");
        }
        assert!(t.get("/v2/r/tags/list", &[]).json()["tags"].as_array().unwrap().contains(&tag.into()));
    }
}

#[test]
fn layers_that_may_not_come_from_urls_need_their_blob() {
    let t = TestRegistry::new();
    let url = Some(r#"["https://example.com/layer"]"#);
    let cases = [
        // Non-distributable without URLs: an ordinary layer.
        (OCI_MANIFEST, NONDISTRIBUTABLE[1], None),
        (OCI_MANIFEST, NONDISTRIBUTABLE[0], Some("[]")),
        // Ordinary layers always need their blob, URLs or not.
        (OCI_MANIFEST, LAYER, url),
        (OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar+zstd", url),
        (DOCKER_MANIFEST, "application/vnd.docker.image.rootfs.diff.tar.gzip", url),
        // A foreign layer without URLs is refused, as Distribution's errMissingURL.
        (DOCKER_MANIFEST, FOREIGN, None),
    ];
    for (media_type, layer_type, urls) in cases {
        let (body, layer) = with_layer_from_urls(&t, media_type, layer_type, urls);
        let before = t.snapshot();
        let r = t.put_manifest("r", "v1", media_type, body.as_bytes());
        assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"), "{layer_type} {urls:?}");
        let detail = &r.json()["errors"][0]["detail"];
        assert!(detail == &layer.to_string() || detail["digest"] == layer.to_string(), "{detail}");
        assert_eq!(t.snapshot(), before);
    }
}

#[test]
fn layer_urls_must_be_http_without_fragment_and_pass_the_configured_patterns() {
    let t = TestRegistry::with_config(Config {
        manifest_urls: Config::from_vars(&|n| match n {
            "WHARF_MANIFEST_URLS_ALLOW" => Some(r"^https://([a-z]+\.)?example\.com/".into()),
            "WHARF_MANIFEST_URLS_DENY" => Some(r"^https://private\.example\.com/".into()),
            _ => None,
        })
        .unwrap()
        .manifest_urls,
        ..Config::default()
    });
    let nd = NONDISTRIBUTABLE[1];
    for urls in [
        r#"["ftp://example.com/layer"]"#,
        r#"["https://example.com/layer#part"]"#,
        r#"["example.com/layer"]"#,
        r#"["https://example.com/a b"]"#,
        r#"["https://example.com/ok","https://example.org/layer"]"#,
        r#"["https://private.example.com/layer"]"#,
    ] {
        let (body, layer) = with_layer_from_urls(&t, OCI_MANIFEST, nd, Some(urls));
        let before = t.snapshot();
        let r = t.put_manifest("r", "v1", OCI_MANIFEST, body.as_bytes());
        assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"), "{urls}");
        let detail = &r.json()["errors"][0]["detail"];
        assert_eq!(detail["digest"], layer.to_string());
        assert!(urls.contains(detail["url"].as_str().unwrap()), "{urls}");
        assert_eq!(t.snapshot(), before);
    }
    let (body, _) = with_layer_from_urls(&t, OCI_MANIFEST, nd, Some(r#"["https://cdn.example.com/layer"]"#));
    assert_eq!(t.put_manifest("r", "v1", OCI_MANIFEST, body.as_bytes()).status, 201);
    // The URLs of ordinary OCI layers are checked too (their blob is needed all the same).
    let (body, layer) = with_layer_from_urls(&t, OCI_MANIFEST, LAYER, Some(r#"["ftp://example.com/x"]"#));
    let r = t.put_manifest("r", "v2", OCI_MANIFEST, body.as_bytes());
    assert_eq!(r.json()["errors"][0]["detail"]["digest"], layer.to_string());
}

#[test]
fn put_with_a_subject_that_does_not_exist_is_accepted_and_answers_oci_subject() {
    let t = TestRegistry::new();
    let body = t.image_manifest("r", OCI_MANIFEST, "x");
    let subject = Digest::sha256_of(b"not pushed yet");
    let text = String::from_utf8(body).unwrap();
    let with_subject = format!(
        r#"{},"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":10}}}}"#,
        &text[..text.len() - 1]
    );
    let r = t.put_manifest("r", "sig", OCI_MANIFEST, with_subject.as_bytes());
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("OCI-Subject"), Some(subject.to_string().as_str()));
}

#[test]
fn put_of_a_manifest_larger_than_4_mib_is_413() {
    let t = TestRegistry::new();
    let mut body = t.image_manifest("r", OCI_MANIFEST, "x");
    body.pop();
    body.extend_from_slice(format!(r#","annotations":{{"pad":"{}"}}}}"#, "x".repeat(4 * 1024 * 1024)).as_bytes());
    let before = t.snapshot();
    let r = t.put_manifest("r", "big", OCI_MANIFEST, &body);
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "SIZE_INVALID");
    assert_eq!(t.snapshot(), before);
}

#[test]
fn put_of_a_manifest_of_exactly_4_mib_is_accepted() {
    let t = TestRegistry::new();
    let mut body = t.image_manifest("r", OCI_MANIFEST, "x");
    body.pop();
    let head = r#","annotations":{"pad":""#;
    let pad = 4 * 1024 * 1024 - body.len() - head.len() - 3;
    body.extend_from_slice(format!(r#"{head}{}"}}}}"#, "x".repeat(pad)).as_bytes());
    assert_eq!(body.len(), 4 * 1024 * 1024);
    assert_eq!(t.put_manifest("r", "big", OCI_MANIFEST, &body).status, 201);
}

#[test]
fn resource_class_policy_denies_classes_not_allowed() {
    let t = TestRegistry::with_config(Config { allowed_classes: vec!["plugin".into()], ..Config::default() });
    let body = t.image_manifest("r", OCI_MANIFEST, "x");
    let before = t.snapshot();
    let r = t.put_manifest("r", "v1", OCI_MANIFEST, &body);
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"));
    assert_eq!(r.json()["errors"][0]["message"], "registry does not allow image manifest");
    assert_eq!(t.snapshot(), before);
}

#[test]
fn resource_class_policy_allows_configured_classes_and_denies_unknown_ones() {
    let t = TestRegistry::with_config(Config { allowed_classes: vec!["image".into()], ..Config::default() });
    let body = t.image_manifest("r", DOCKER_MANIFEST, "x");
    assert_eq!(t.put_manifest("r", "v1", DOCKER_MANIFEST, &body).status, 201);
    let artifact = String::from_utf8(t.image_manifest("r", OCI_MANIFEST, "y"))
        .unwrap()
        .replace("application/vnd.oci.image.config.v1+json", "application/vnd.example.config+json");
    let r = t.put_manifest("r", "art", OCI_MANIFEST, artifact.as_bytes());
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errors"][0]["message"], "unknown manifest class for application/vnd.example.config+json");
}

#[test]
fn without_a_class_policy_artifacts_are_accepted() {
    let t = TestRegistry::new();
    let artifact = String::from_utf8(t.image_manifest("r", OCI_MANIFEST, "y"))
        .unwrap()
        .replace("application/vnd.oci.image.config.v1+json", "application/vnd.example.config+json");
    assert_eq!(t.put_manifest("r", "art", OCI_MANIFEST, artifact.as_bytes()).status, 201);
}

// ---------------------------------------------------------------- manifest DELETE

#[test]
fn delete_by_tag_untags_and_keeps_the_manifest() {
    let t = TestRegistry::new();
    let (_, d) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let r = t.delete("/v2/r/manifests/v1");
    assert_eq!(r.status, 202);
    assert_eq!(t.get("/v2/r/manifests/v1", &[("Accept", OCI_MANIFEST)]).status, 404);
    assert_eq!(t.get(&format!("/v2/r/manifests/{d}"), &[("Accept", OCI_MANIFEST)]).status, 200);
}

#[test]
fn delete_of_an_unknown_tag_is_manifest_unknown() {
    let t = TestRegistry::new();
    let r = t.delete("/v2/r/manifests/nope");
    assert_eq!((r.status, r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
}

#[test]
fn delete_by_digest_removes_the_manifest_and_every_tag_pointing_at_it() {
    let t = TestRegistry::new();
    let (body, d) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    assert_eq!(t.put_manifest("r", "v2", OCI_MANIFEST, &body).status, 201);
    t.push_image("r", "other", OCI_MANIFEST, "y");
    let r = t.delete(&format!("/v2/r/manifests/{d}"));
    assert_eq!(r.status, 202);
    for path in ["/v2/r/manifests/v1".to_string(), "/v2/r/manifests/v2".to_string(), format!("/v2/r/manifests/{d}")] {
        assert_eq!(t.get(&path, &[("Accept", OCI_MANIFEST)]).status, 404, "{path}");
    }
    assert_eq!(t.get("/v2/r/manifests/other", &[("Accept", OCI_MANIFEST)]).status, 200);
}

#[test]
fn delete_of_an_unknown_digest_or_an_invalid_reference_is_manifest_unknown() {
    let t = TestRegistry::new();
    t.push_image("r", "v1", OCI_MANIFEST, "x");
    let before = t.snapshot();
    // Distribution reads a malformed digest as a tag, which is unknown.
    for reference in [Digest::sha256_of(b"x").to_string(), "sha256:123".into(), ".INVALID_MANIFEST_NAME".into()] {
        let r = t.delete(&format!("/v2/r/manifests/{reference}"));
        assert_eq!((r.status, r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"), "{reference}");
    }
    assert_eq!(t.snapshot(), before);
    let off = t.sharing_storage(Config::default());
    let r = off.delete("/v2/r/manifests/.INVALID_MANIFEST_NAME");
    assert_eq!((r.status, r.error_code().as_str()), (405, "UNSUPPORTED"));
}

#[test]
fn get_and_head_of_a_reference_that_is_neither_tag_nor_digest_is_manifest_unknown() {
    let t = TestRegistry::new();
    t.push_image("r", "v1", OCI_MANIFEST, "x");
    let body = t.image_manifest("r", OCI_MANIFEST, "y");
    let before = t.snapshot();
    let long_tag = "t".repeat(129);
    for reference in [".INVALID_MANIFEST_NAME", "-bad", "a%20b", &long_tag, "sha256:123", "md5:abc", "sha256:"] {
        let path = format!("/v2/r/manifests/{reference}");
        let r = t.get(&path, &[("Accept", OCI_MANIFEST)]);
        assert_eq!((r.status, r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"), "{reference}");
        assert_eq!(r.json()["errors"][0]["detail"]["reference"], reference.replace("%20", " "));
        let h = t.head(&path, &[("Accept", OCI_MANIFEST)]);
        assert_eq!((h.status, h.error_code().as_str()), (404, "MANIFEST_UNKNOWN"), "{reference}");
    }
    // PUT is still told what is wrong.
    let r = t.put_manifest("r", ".INVALID_MANIFEST_NAME", OCI_MANIFEST, &body);
    assert_eq!((r.status, r.error_code().as_str()), (400, "TAG_INVALID"));
    let r = t.put_manifest("r", "sha256:123", OCI_MANIFEST, &body);
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(t.snapshot(), before);
}

#[test]
fn deletes_are_unsupported_unless_enabled() {
    let t = TestRegistry::with_config(Config::default());
    let (_, d) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let before = t.snapshot();
    for path in ["/v2/r/manifests/v1".to_string(), format!("/v2/r/manifests/{d}")] {
        let r = t.delete(&path);
        assert_eq!((r.status, r.error_code().as_str()), (405, "UNSUPPORTED"), "{path}");
    }
    assert_eq!(t.snapshot(), before);
}

#[test]
fn read_only_mode_refuses_every_write_with_405() {
    let t = TestRegistry::new();
    let (body, d) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let ro = TestRegistry::with_config(Config { read_only: true, delete_enabled: true, ..Config::default() });
    let before = ro.snapshot();
    let cases = [
        (Method::Put, "/v2/r/manifests/v1".to_string()),
        (Method::Delete, "/v2/r/manifests/v1".to_string()),
        (Method::Delete, format!("/v2/r/blobs/{d}")),
        (Method::Post, "/v2/r/blobs/uploads/".to_string()),
        (Method::Patch, format!("/v2/r/blobs/uploads/{}", "0".repeat(32))),
    ];
    for (method, path) in cases {
        let r = ro.send(method, &path, &[("Content-Type", OCI_MANIFEST)], MemoryBody::from_bytes(body.clone()));
        assert_eq!((r.status, r.error_code().as_str()), (405, "UNSUPPORTED"), "{method:?} {path}");
    }
    assert_eq!(ro.snapshot(), before);
    assert_eq!(ro.get("/v2/", &[]).status, 200);
}

// ---------------------------------------------------------------- blobs

#[test]
fn blob_get_and_head_return_the_bytes_and_headers() {
    let t = TestRegistry::new();
    let d = t.push_blob("r", b"some bytes");
    let r = t.get(&format!("/v2/r/blobs/{d}"), &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"some bytes"[..]));
    assert_eq!(r.header("Content-Length"), Some("10"));
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.to_string().as_str()));
    let h = t.head(&format!("/v2/r/blobs/{d}"), &[]);
    assert_eq!((h.status, h.body.len()), (200, 0));
    assert_eq!(h.header("Content-Length"), Some("10"));
}

#[test]
fn unknown_blob_is_blob_unknown_and_blobs_are_scoped_to_their_repository() {
    let t = TestRegistry::new();
    let d = t.push_blob("r", b"x");
    for path in [format!("/v2/r/blobs/{}", Digest::sha256_of(b"y")), format!("/v2/other/blobs/{d}")] {
        let r = t.get(&path, &[]);
        assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UNKNOWN"), "{path}");
        assert_eq!(t.head(&path, &[]).status, 404);
    }
}

#[test]
fn blob_delete_unlinks_it_from_the_repository() {
    let t = TestRegistry::new();
    let d = t.push_blob("r", b"x");
    t.push_blob("s", b"x");
    assert_eq!(t.delete(&format!("/v2/r/blobs/{d}")).status, 202);
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).status, 404);
    assert_eq!(t.get(&format!("/v2/s/blobs/{d}"), &[]).status, 200);
    assert_eq!(t.delete(&format!("/v2/r/blobs/{d}")).status, 404);
}

// ---------------------------------------------------------------- uploads

fn start_session(t: &TestRegistry, repo: &str) -> String {
    let r = t.send(Method::Post, &format!("/v2/{repo}/blobs/uploads/"), &[], MemoryBody::empty());
    assert_eq!(r.status, 202);
    assert_eq!(r.header("Range"), Some("0-0"));
    assert!(r.header("Docker-Upload-UUID").is_some());
    r.header("Location").unwrap().to_owned()
}

#[test]
fn session_upload_post_patch_put_makes_the_blob_visible_only_at_the_end() {
    let t = TestRegistry::new();
    let location = start_session(&t, "r");
    assert!(location.starts_with("/v2/r/blobs/uploads/"));
    let data = b"streamed layer".to_vec();
    let d = Digest::sha256_of(&data);
    let r =
        t.send(Method::Patch, &location, &[], MemoryBody::from_chunks(vec![data[..5].to_vec(), data[5..].to_vec()]));
    assert_eq!(r.status, 202);
    assert_eq!(r.header("Range"), Some("0-13"));
    assert_eq!(t.head(&format!("/v2/r/blobs/{d}"), &[]).status, 404);
    let status = t.get(&location, &[]);
    assert_eq!((status.status, status.header("Range")), (204, Some("0-13")));
    let r = t.send(Method::Put, &format!("{location}?digest={d}"), &[], MemoryBody::empty());
    assert_eq!(r.status, 201);
    assert_eq!(r.header("Location"), Some(format!("/v2/r/blobs/{d}").as_str()));
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, data);
    // The session is gone.
    assert_eq!(t.get(&location, &[]).status, 404);
}

#[test]
fn session_upload_with_the_body_in_the_final_put() {
    let t = TestRegistry::new();
    let location = start_session(&t, "r");
    let d = Digest::sha256_of(b"all in the put");
    let r = t.send(Method::Put, &format!("{location}?digest={d}"), &[], MemoryBody::from_bytes(&b"all in the put"[..]));
    assert_eq!(r.status, 201);
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, b"all in the put");
}

#[test]
fn chunks_across_requests_are_hashed_and_cut_into_parts() {
    let t = TestRegistry::new();
    let location = start_session(&t, "r");
    // 2.5 parts in three PATCHes of uneven size: parts are re-cut, the remainder carried.
    let data: Vec<u8> = (0..(PART_SIZE * 5 / 2)).map(|i| (i % 251) as u8).collect();
    let cuts = [0, PART_SIZE / 3, PART_SIZE * 3 / 2, data.len()];
    for w in cuts.windows(2) {
        let range = format!("{}-{}", w[0], w[1] - 1);
        let r = t.send(
            Method::Patch,
            &location,
            &[("Content-Range", &range)],
            MemoryBody::from_bytes(data[w[0]..w[1]].to_vec()),
        );
        assert_eq!(r.status, 202, "{range}");
        assert_eq!(r.header("Range"), Some(format!("0-{}", w[1] - 1).as_str()));
    }
    assert_eq!(t.objects.open_multipart_uploads(), 1);
    let d = Digest::sha256_of(&data);
    assert_eq!(t.send(Method::Put, &format!("{location}?digest={d}"), &[], MemoryBody::empty()).status, 201);
    assert_eq!(t.objects.open_multipart_uploads(), 0);
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, data);
}

#[test]
fn equal_chunks_become_equal_parts_and_nothing_is_carried() {
    let t = TestRegistry::new();
    let location = start_session(&t, "r");
    // Three chunks of one and a half default parts each, announced with Content-Length, then a
    // short one: cut into default parts, every request would carry some to the next.
    let chunk = PART_SIZE * 3 / 2;
    let data: Vec<u8> = (0..(chunk * 3 + 10)).map(|i| (i % 241) as u8).collect();
    for start in (0..data.len()).step_by(chunk) {
        let end = (start + chunk).min(data.len());
        let range = format!("{start}-{}", end - 1);
        let length = (end - start).to_string();
        let headers = [("Content-Range", range.as_str()), ("Content-Length", length.as_str())];
        let r = t.send(Method::Patch, &location, &headers, MemoryBody::from_bytes(data[start..end].to_vec()));
        assert_eq!(r.status, 202, "{range}");
        // The session object holds its state line and the bytes carried to the next request:
        // none after a whole chunk.
        let state: usize =
            t.objects.snapshot().iter().filter(|(k, _)| k.starts_with("uploads/")).map(|(_, v)| v.len()).sum();
        if end - start == chunk {
            assert!(state < 4096, "{state} bytes carried after {range}");
        }
    }
    let d = Digest::sha256_of(&data);
    assert_eq!(t.send(Method::Put, &format!("{location}?digest={d}"), &[], MemoryBody::empty()).status, 201);
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, data);
}

#[test]
fn a_body_of_announced_length_streams_its_parts_after_the_carried_bytes() {
    let t = TestRegistry::new();
    let location = start_session(&t, "r");
    // A third of a part without a length (carried), then two and a half parts announced, in
    // reads that do not line up with parts: the parts stream the carried bytes, then the body's,
    // and the last half part is carried to the final PUT.
    let data: Vec<u8> = (0..(PART_SIZE * 17 / 6)).map(|i| (i % 239) as u8).collect();
    let first = PART_SIZE / 3;
    let r = t.send(Method::Patch, &location, &[], MemoryBody::from_bytes(data[..first].to_vec()));
    assert_eq!(r.status, 202);
    let length = (data.len() - first).to_string();
    let chunks = data[first..].chunks(100_003).map(<[u8]>::to_vec).collect();
    let r = t.send(Method::Patch, &location, &[("Content-Length", &length)], MemoryBody::from_chunks(chunks));
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("Range"), Some(format!("0-{}", data.len() - 1).as_str()));
    let d = Digest::sha256_of(&data);
    assert_eq!(t.send(Method::Put, &format!("{location}?digest={d}"), &[], MemoryBody::empty()).status, 201);
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, data);
    assert_eq!(t.objects.open_multipart_uploads(), 0);
}

#[test]
fn a_body_shorter_than_announced_is_refused_and_the_session_stays_as_it_was() {
    let t = TestRegistry::new();
    let location = start_session(&t, "r");
    t.send(Method::Patch, &location, &[], MemoryBody::from_bytes(vec![1u8; 10]));
    let before = t.snapshot();
    // Announces two parts, sends one and a half: the first part streamed, the second broken off.
    let length = (PART_SIZE * 2).to_string();
    let body = MemoryBody::from_bytes(vec![2u8; PART_SIZE * 3 / 2]);
    let r = t.send(Method::Patch, &location, &[("Content-Length", &length)], body);
    assert_eq!((r.status, r.error_code().as_str()), (400, "BLOB_UPLOAD_INVALID"));
    assert_eq!(t.snapshot(), before);
    assert_eq!(t.objects.open_multipart_uploads(), 0, "the multipart upload this request started is aborted");
    assert_eq!(t.get(&location, &[]).header("Range"), Some("0-9"));
}

#[test]
fn an_out_of_order_chunk_is_416_and_changes_nothing() {
    let t = TestRegistry::new();
    let location = start_session(&t, "r");
    t.send(Method::Patch, &location, &[("Content-Range", "0-2")], MemoryBody::from_bytes(&b"abc"[..]));
    let before = t.snapshot();
    for range in ["0-2", "5-7", "junk"] {
        let r = t.send(Method::Patch, &location, &[("Content-Range", range)], MemoryBody::from_bytes(&b"def"[..]));
        assert_eq!((r.status, r.error_code().as_str()), (416, "RANGE_INVALID"), "{range}");
    }
    assert_eq!(t.snapshot(), before);
    let ok = t.send(Method::Patch, &location, &[("Content-Range", "3-5")], MemoryBody::from_bytes(&b"def"[..]));
    assert_eq!(ok.status, 202);
}

#[test]
fn a_closing_put_whose_chunk_is_out_of_order_is_416_and_the_session_goes_on() {
    let t = TestRegistry::new();
    let location = start_session(&t, "r");
    t.send(Method::Patch, &location, &[("Content-Range", "0-2")], MemoryBody::from_bytes(&b"abc"[..]));
    let d = Digest::sha256_of(b"abcdef");
    let before = t.snapshot();
    for range in ["0-2", "5-7", "4-6", "junk"] {
        let r = t.send(
            Method::Put,
            &format!("{location}?digest={d}"),
            &[("Content-Range", range), ("Content-Length", "3")],
            MemoryBody::from_bytes(&b"def"[..]),
        );
        assert_eq!((r.status, r.error_code().as_str()), (416, "RANGE_INVALID"), "{range}");
        assert_eq!(t.snapshot(), before, "{range}");
    }
    assert_eq!(t.get(&location, &[]).header("Range"), Some("0-2"));
    let r = t.send(
        Method::Put,
        &format!("{location}?digest={d}"),
        &[("Content-Range", "3-5"), ("Content-Length", "3")],
        MemoryBody::from_bytes(&b"def"[..]),
    );
    assert_eq!(r.status, 201);
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, b"abcdef");
}

#[test]
fn a_chunk_whose_range_is_not_its_length_is_refused_and_changes_nothing() {
    let t = TestRegistry::new();
    let location = start_session(&t, "r");
    let before = t.snapshot();
    let sixteen = || MemoryBody::from_bytes(vec![7u8; 16]);
    // Content-Length and Content-Range disagree: Distribution's SIZE_INVALID, before any byte.
    let r = t.send(Method::Patch, &location, &[("Content-Range", "0-999"), ("Content-Length", "16")], sixteen());
    assert_eq!((r.status, r.error_code().as_str()), (400, "SIZE_INVALID"));
    // Without a Content-Length (a chunked body), the body itself is measured.
    let r = t.send(Method::Patch, &location, &[("Content-Range", "0-999")], sixteen());
    assert_eq!((r.status, r.error_code().as_str()), (400, "BLOB_UPLOAD_INVALID"));
    let r = t.send(Method::Patch, &location, &[("Content-Range", "0-7")], sixteen());
    assert_eq!((r.status, r.error_code().as_str()), (400, "SIZE_INVALID"));
    // The same in a closing PUT and a monolithic POST.
    let d = Digest::sha256_of(&[7u8; 16]);
    let put = format!("{location}?digest={d}");
    let r = t.send(Method::Put, &put, &[("Content-Range", "0-999"), ("Content-Length", "16")], sixteen());
    assert_eq!((r.status, r.error_code().as_str()), (400, "SIZE_INVALID"));
    let post = format!("/v2/r/blobs/uploads/?digest={d}");
    let r = t.send(Method::Post, &post, &[("Content-Range", "0-999"), ("Content-Length", "16")], sixteen());
    assert_eq!((r.status, r.error_code().as_str()), (400, "SIZE_INVALID"));
    let r = t.send(Method::Post, &post, &[("Content-Range", "1-16"), ("Content-Length", "16")], sixteen());
    assert_eq!((r.status, r.error_code().as_str()), (416, "RANGE_INVALID"));
    // A body longer than its Content-Length (which HTTP framing prevents on the wire).
    let r = t.send(Method::Patch, &location, &[("Content-Length", "8")], sixteen());
    assert_eq!((r.status, r.error_code().as_str()), (400, "SIZE_INVALID"));
    assert_eq!(t.snapshot(), before);
    let r = t.send(Method::Patch, &location, &[("Content-Range", "0-15"), ("Content-Length", "16")], sixteen());
    assert_eq!(r.status, 202);
    let r = t.send(Method::Post, &post, &[("Content-Range", "0-15"), ("Content-Length", "16")], sixteen());
    assert_eq!(r.status, 201);
}

/// A request body that gives its chunks, then breaks as a connection lost mid-body does.
struct BrokenBody(Vec<Vec<u8>>);

impl wharf::base::http::BodyReader for BrokenBody {
    type Raw = MemoryBody;

    async fn chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        if self.0.is_empty() { Err("Network connection lost".into()) } else { Ok(Some(self.0.remove(0))) }
    }

    /// R2 reading it as a raw stream sees it end short.
    fn take_raw(&mut self) -> Option<MemoryBody> {
        Some(MemoryBody::from_chunks(std::mem::take(&mut self.0)))
    }
}

fn send_broken(t: &TestRegistry, method: Method, path: &str, length: usize, chunks: Vec<Vec<u8>>) -> TestResponse {
    let headers = wharf::base::http::Headers::new().with("Content-Length", &length.to_string());
    let request = wharf::base::http::Request::new(method, path, headers, BrokenBody(chunks));
    let response = futures_executor::block_on(t.registry.handle(request));
    let body = match response.body {
        wharf::base::http::Body::Empty => Vec::new(),
        wharf::base::http::Body::Bytes(b) | wharf::base::http::Body::Stream(b) => b,
    };
    TestResponse { status: response.status, headers: response.headers, body }
}

#[test]
fn a_body_that_breaks_off_leaves_every_kind_of_upload_as_it_was() {
    let t = TestRegistry::new();
    let location = start_session(&t, "r");
    let fresh = start_session(&t, "r");
    t.send(Method::Patch, &location, &[], MemoryBody::from_bytes(vec![1u8; 10]));
    let before = t.snapshot();
    let d = Digest::sha256_of(&[2u8; 64]);
    let cases = [
        // 64 announced, 16 sent: read into the session's buffer.
        (Method::Patch, location.clone(), 64, vec![vec![2u8; 16]]),
        // Two parts announced: the first streams to R2, the second breaks off.
        (Method::Patch, location.clone(), PART_SIZE * 2, vec![vec![2u8; PART_SIZE], vec![2u8; 16]]),
        // The last chunk of a closing PUT.
        (Method::Put, format!("{location}?digest={d}"), 64, vec![vec![2u8; 16]]),
        // A whole blob in a closing PUT, and a monolithic POST: one verified put of the stream.
        (Method::Put, format!("{fresh}?digest={d}"), 64, vec![vec![2u8; 16]]),
        (Method::Post, format!("/v2/r/blobs/uploads/?digest={d}"), 64, vec![vec![2u8; 16]]),
    ];
    for (method, path, length, chunks) in cases {
        let r = send_broken(&t, method, &path, length, chunks);
        assert_eq!((r.status, r.error_code().as_str()), (400, "BLOB_UPLOAD_INVALID"), "{method:?} {path}");
        assert_eq!(t.snapshot(), before, "{method:?} {path}");
        assert_eq!(t.objects.open_multipart_uploads(), 0, "{method:?} {path}");
    }
    // Both sessions go on where they stood.
    assert_eq!(t.get(&location, &[]).header("Range"), Some("0-9"));
    assert_eq!(t.get(&fresh, &[]).header("Range"), Some("0-0"));
    let mut data = vec![1u8; 10];
    data.extend_from_slice(&[3u8; 6]);
    let d = Digest::sha256_of(&data);
    let r = t.send(Method::Put, &format!("{location}?digest={d}"), &[], MemoryBody::from_bytes(vec![3u8; 6]));
    assert_eq!(r.status, 201);
    let r = t.send(Method::Put, &format!("{fresh}?digest={d}"), &[], MemoryBody::from_bytes(data.clone()));
    assert_eq!(r.status, 201);
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, data);
}

#[test]
fn an_encoded_slash_stays_inside_its_segment() {
    let t = TestRegistry::new();
    t.push_image("a/b", "v1", OCI_MANIFEST, "x");
    let location = start_session(&t, "a/b");
    let id = location.rsplit('/').next().unwrap().to_owned();
    let before = t.snapshot();
    let cases = [
        (Method::Get, "/v2/a/b/blobs/sha256:..%2F..%2Fetc%2Fpasswd".to_owned(), 400, "DIGEST_INVALID"),
        // A reference that is neither tag nor digest names no manifest to read; a push is told
        // what is wrong with it.
        (Method::Get, "/v2/a/b/manifests/sha256:..%2F..%2Fv1".to_owned(), 404, "MANIFEST_UNKNOWN"),
        (Method::Put, "/v2/a/b/manifests/sha256:..%2F..%2Fv1".to_owned(), 400, "DIGEST_INVALID"),
        (Method::Put, "/v2/a/b/manifests/a%2Fb".to_owned(), 400, "TAG_INVALID"),
        (Method::Get, "/v2/a/b/manifests/..%2Fv1".to_owned(), 404, "MANIFEST_UNKNOWN"),
        (Method::Patch, format!("/v2/a/b/blobs/uploads/..%2F{id}"), 404, "BLOB_UPLOAD_UNKNOWN"),
        (Method::Get, format!("/v2/a/b/blobs/uploads/{id}%2F"), 404, "BLOB_UPLOAD_UNKNOWN"),
        (Method::Get, "/v2/a%2Fb/manifests/v1".to_owned(), 400, "NAME_INVALID"),
        (Method::Get, "/v2/a%2fb/tags/list".to_owned(), 400, "NAME_INVALID"),
        (Method::Post, "/v2/a%2Fb/blobs/uploads/".to_owned(), 400, "NAME_INVALID"),
        (Method::Get, "/v2/a/b%2F..%2F..%2Fc/manifests/v1".to_owned(), 400, "NAME_INVALID"),
        (Method::Get, "/v2/a%2Fb%2Fmanifests%2Fv1".to_owned(), 404, "UNSUPPORTED"),
    ];
    for (method, path, status, code) in cases {
        let r = t.send(method, &path, &[], MemoryBody::from_bytes(&b"x"[..]));
        assert_eq!((r.status, r.error_code().as_str()), (status, code), "{method:?} {path}");
        assert_eq!(t.snapshot(), before, "{method:?} {path}");
    }
    // Other characters are decoded inside their segment as before.
    assert_eq!(t.get("/v2/%61/b/manifests/v%31", &[("Accept", OCI_MANIFEST)]).status, 200);
    let encoded_id = format!("/v2/a/b/blobs/uploads/%{:02X}{}", id.as_bytes()[0], &id[1..]);
    assert_eq!(t.get(&encoded_id, &[]).status, 204);
}

#[test]
fn a_digest_mismatch_is_digest_invalid_and_leaves_nothing_visible() {
    let t = TestRegistry::new();
    let before = t.snapshot();
    // Session upload larger than one part, so a multipart upload is in flight.
    let location = start_session(&t, "r");
    let data = vec![1u8; PART_SIZE + 10];
    t.send(Method::Patch, &location, &[], MemoryBody::from_bytes(data));
    let wrong = Digest::sha256_of(b"something else");
    let r = t.send(Method::Put, &format!("{location}?digest={wrong}"), &[], MemoryBody::empty());
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(t.snapshot(), before);
    assert_eq!(t.get(&location, &[]).status, 404);
    // Monolithic upload with a wrong digest.
    let r = t.send(
        Method::Post,
        &format!("/v2/r/blobs/uploads/?digest={wrong}"),
        &[],
        MemoryBody::from_bytes(vec![2u8; 10]),
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(t.snapshot(), before);
    assert_eq!(t.head(&format!("/v2/r/blobs/{wrong}"), &[]).status, 404);
}

#[test]
fn a_large_monolithic_upload_goes_through_multipart_and_verifies() {
    let t = TestRegistry::new();
    let data: Vec<u8> = (0..(PART_SIZE * 2 + 7)).map(|i| (i % 13) as u8).collect();
    let d = Digest::sha256_of(&data);
    let chunks: Vec<Vec<u8>> = data.chunks(64 * 1024).map(|c| c.to_vec()).collect();
    let r = t.send(Method::Post, &format!("/v2/r/blobs/uploads/?digest={d}"), &[], MemoryBody::from_chunks(chunks));
    assert_eq!(r.status, 201);
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, data);
    assert_eq!(t.objects.open_multipart_uploads(), 0);
}

#[test]
fn a_sha512_monolithic_upload_is_verified_with_sha512() {
    let t = TestRegistry::new();
    let d = Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap().recompute(b"512");
    let r = t.send(Method::Post, &format!("/v2/r/blobs/uploads/?digest={d}"), &[], MemoryBody::from_bytes(&b"512"[..]));
    assert_eq!(r.status, 201);
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, b"512");
}

#[test]
fn a_session_upload_can_finish_with_a_sha512_digest() {
    let t = TestRegistry::new();
    let data: Vec<u8> = (0..(PART_SIZE + 100)).map(|i| (i % 7) as u8).collect();
    let d = Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap().recompute(&data);
    let location = start_session(&t, "r");
    t.send(Method::Patch, &location, &[], MemoryBody::from_bytes(data[..10].to_vec()));
    t.send(Method::Patch, &location, &[], MemoryBody::from_bytes(data[10..].to_vec()));
    let r = t.send(Method::Put, &format!("{location}?digest={d}"), &[], MemoryBody::empty());
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, data);
}

#[test]
fn a_sha512_session_is_verified_by_reading_the_blob_back_and_leaves_nothing_on_a_mismatch() {
    // Sessions hash sha256 as the bytes come; a sha512 digest is checked by reading the stored
    // bytes back, piece by piece (this blob spans three of them).
    let t = TestRegistry::new();
    let data: Vec<u8> = (0..(2 * MAX_PART_SIZE + 5)).map(|i| (i % 251) as u8).collect();
    let sha512 = |b: &[u8]| Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap().recompute(b);
    let before = t.snapshot();
    let location = start_session(&t, "r");
    t.send(Method::Patch, &location, &[], MemoryBody::from_bytes(data.clone()));
    let wrong = sha512(b"something else");
    let r = t.send(Method::Put, &format!("{location}?digest={wrong}"), &[], MemoryBody::empty());
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(t.snapshot(), before, "a refused sha512 upload left something behind");
    assert_eq!(t.objects.open_multipart_uploads(), 0);
    assert_eq!(t.get(&location, &[]).status, 404);

    let location = start_session(&t, "r");
    t.send(Method::Patch, &location, &[], MemoryBody::from_bytes(data.clone()));
    let right = sha512(&data);
    let r = t.send(Method::Put, &format!("{location}?digest={right}"), &[], MemoryBody::empty());
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(t.get(&format!("/v2/r/blobs/{right}"), &[]).body, data);
}

#[test]
fn a_whole_blob_with_its_length_announced_is_written_by_one_verified_put() {
    let t = TestRegistry::new();
    let data = vec![9u8; PART_SIZE + 1];
    let d = Digest::sha256_of(&data);
    let len = data.len().to_string();
    let before = t.snapshot();
    let wrong = Digest::sha256_of(b"other");
    let r = t.send(
        Method::Post,
        &format!("/v2/r/blobs/uploads/?digest={wrong}"),
        &[("Content-Length", &len)],
        MemoryBody::from_bytes(data.clone()),
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(t.snapshot(), before);
    let r = t.send(
        Method::Post,
        &format!("/v2/r/blobs/uploads/?digest={d}"),
        &[("Content-Length", &len)],
        MemoryBody::from_bytes(data.clone()),
    );
    assert_eq!(r.status, 201);
    // One object with the bytes, written by a single put (no multipart upload).
    let objects = t.objects.snapshot();
    assert_eq!(objects.iter().filter(|(k, v)| k.starts_with("blobs/by-upload/") && **v == data).count(), 1);
    assert_eq!(t.objects.open_multipart_uploads(), 0);
    assert_eq!(t.get(&format!("/v2/r/blobs/{d}"), &[]).body, data);
    // A session finished by a PUT with the whole body goes the same way.
    let location = start_session(&t, "s");
    let r = t.send(
        Method::Put,
        &format!("{location}?digest={d}"),
        &[("Content-Length", &len)],
        MemoryBody::from_bytes(data),
    );
    assert_eq!(r.status, 201);
    assert_eq!(t.get(&location, &[]).status, 404);
    assert_eq!(t.objects.open_multipart_uploads(), 0);
}

#[test]
fn an_empty_blob_can_be_uploaded() {
    let t = TestRegistry::new();
    let d = Digest::sha256_of(b"");
    let location = start_session(&t, "r");
    assert_eq!(t.send(Method::Put, &format!("{location}?digest={d}"), &[], MemoryBody::empty()).status, 201);
    let r = t.get(&format!("/v2/r/blobs/{d}"), &[]);
    assert_eq!((r.status, r.header("Content-Length")), (200, Some("0")));
}

#[test]
fn cancelling_a_session_drops_it_and_its_parts() {
    let t = TestRegistry::new();
    let before = t.snapshot();
    let location = start_session(&t, "r");
    t.send(Method::Patch, &location, &[], MemoryBody::from_bytes(vec![0u8; PART_SIZE + 1]));
    assert_eq!(t.delete(&location).status, 204);
    assert_eq!(t.snapshot(), before);
    let r = t.get(&location, &[]);
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
}

#[test]
fn a_session_belongs_to_the_repository_that_started_it() {
    let t = TestRegistry::new();
    let location = start_session(&t, "r");
    let id = location.rsplit('/').next().unwrap();
    let r = t.send(Method::Patch, &format!("/v2/other/blobs/uploads/{id}"), &[], MemoryBody::from_bytes(&b"x"[..]));
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
}

#[test]
fn mount_from_a_repository_holding_the_blob_links_it_without_copying_bytes() {
    let t = TestRegistry::new();
    let d = t.push_blob("src", b"shared");
    let before = t.objects.snapshot();
    let r = t.send(Method::Post, &format!("/v2/dst/blobs/uploads/?mount={d}&from=src"), &[], MemoryBody::empty());
    assert_eq!(r.status, 201);
    assert_eq!(r.header("Location"), Some(format!("/v2/dst/blobs/{d}").as_str()));
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.to_string().as_str()));
    assert_eq!(t.get(&format!("/v2/dst/blobs/{d}"), &[]).body, b"shared");
    let after = t.objects.snapshot();
    let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    // The link, and its holder (which the bytes' garbage collection goes by): no bytes.
    let link = format!("repositories/dst/_layers/sha256/{}", d.hex());
    let object = &t.objects.metadata(&link).unwrap().custom["object"];
    let holder = format!("holders/{}/dst", object.strip_prefix("blobs/by-upload/").unwrap());
    assert_eq!(added, [&holder, &link], "only a link and its holder are written");
}

#[test]
fn mount_from_a_repository_without_the_blob_falls_back_to_a_session() {
    let t = TestRegistry::new();
    let d = t.push_blob("src", b"shared");
    let r = t.send(Method::Post, &format!("/v2/dst/blobs/uploads/?mount={d}&from=other"), &[], MemoryBody::empty());
    assert_eq!(r.status, 202);
    assert!(r.header("Location").unwrap().starts_with("/v2/dst/blobs/uploads/"));
    assert_eq!(t.head(&format!("/v2/dst/blobs/{d}"), &[]).status, 404);
}

#[test]
fn mount_without_from_finds_the_blob_in_any_repository() {
    let t = TestRegistry::new();
    let d = t.push_blob("src", b"anywhere");
    let r = t.send(Method::Post, &format!("/v2/dst/blobs/uploads/?mount={d}"), &[], MemoryBody::empty());
    assert_eq!(r.status, 201);
    assert_eq!(t.get(&format!("/v2/dst/blobs/{d}"), &[]).body, b"anywhere");
    let unknown = Digest::sha256_of(b"never pushed");
    let r = t.send(Method::Post, &format!("/v2/dst/blobs/uploads/?mount={unknown}"), &[], MemoryBody::empty());
    assert_eq!(r.status, 202);
}

#[test]
fn a_mounted_blob_stays_readable_after_the_source_repository_deletes_it() {
    let t = TestRegistry::new();
    let d = t.push_blob("src", b"kept");
    t.send(Method::Post, &format!("/v2/dst/blobs/uploads/?mount={d}&from=src"), &[], MemoryBody::empty());
    assert_eq!(t.delete(&format!("/v2/src/blobs/{d}")).status, 202);
    assert_eq!(t.get(&format!("/v2/dst/blobs/{d}"), &[]).body, b"kept");
}

#[test]
fn session_responses_advertise_the_minimum_useful_chunk() {
    let t = TestRegistry::new();
    let r = t.send(Method::Post, "/v2/r/blobs/uploads/", &[], MemoryBody::empty());
    assert_eq!(r.header("OCI-Chunk-Min-Length"), Some(PART_SIZE.to_string().as_str()));
}

#[test]
fn a_chunk_over_the_configured_maximum_is_413_and_leaves_the_session_as_it_was() {
    let max = PART_SIZE as u64;
    let t = TestRegistry::with_config(Config { max_chunk_size: max, ..Config::default() });
    let location = start_session(&t, "r");
    t.send(Method::Patch, &location, &[], MemoryBody::from_bytes(&b"abc"[..]));
    let before = t.snapshot();
    // Announced too large: refused before reading.
    let declared = (max + 1).to_string();
    let r = t.send(Method::Patch, &location, &[("Content-Length", &declared)], MemoryBody::from_bytes(&b"x"[..]));
    assert_eq!((r.status, r.error_code().as_str()), (413, "SIZE_INVALID"));
    // Streamed without a length and found too large on the way: refused too.
    let chunks = vec![vec![1u8; PART_SIZE], vec![2u8; 10]];
    let r = t.send(Method::Patch, &location, &[], MemoryBody::from_chunks(chunks.clone()));
    assert_eq!((r.status, r.error_code().as_str()), (413, "SIZE_INVALID"));
    assert_eq!(t.get(&location, &[]).header("Range"), Some("0-2"));
    let d = Digest::sha256_of(&chunks.concat());
    let r = t.send(Method::Post, &format!("/v2/r/blobs/uploads/?digest={d}"), &[], MemoryBody::from_chunks(chunks));
    assert_eq!(r.status, 413);
    // The multipart upload started by the refused monolithic POST was aborted.
    let after = t.snapshot();
    assert_eq!(after, before);
}

#[test]
fn abandoned_sessions_are_aborted_by_the_cleanup_and_fresh_ones_kept() {
    let t = TestRegistry::with_config(Config { upload_max_age_secs: 60, ..Config::default() });
    let empty = t.snapshot();
    t.objects.set_now_ms(1_000);
    let old = start_session(&t, "r");
    t.send(Method::Patch, &old, &[], MemoryBody::from_bytes(vec![0u8; PART_SIZE + 1]));
    assert_eq!(t.objects.open_multipart_uploads(), 1);
    t.objects.set_now_ms(50_000);
    let fresh = start_session(&t, "r");
    let removed = futures_executor::block_on(t.registry.clean_abandoned_uploads(61_001 + 1_000)).unwrap();
    assert_eq!(removed, 1);
    assert_eq!(t.objects.open_multipart_uploads(), 0);
    assert_eq!(t.get(&old, &[]).status, 404);
    assert_eq!(t.get(&fresh, &[]).status, 204);
    assert_eq!(t.delete(&fresh).status, 204);
    assert_eq!(t.snapshot(), empty);
}

#[test]
fn blob_range_requests_get_206_and_unsatisfiable_ones_416() {
    let t = TestRegistry::new();
    let d = t.push_blob("r", b"0123456789");
    let path = format!("/v2/r/blobs/{d}");
    let r = t.get(&path, &[("Range", "bytes=2-5")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &b"2345"[..]));
    assert_eq!(r.header("Content-Range"), Some("bytes 2-5/10"));
    assert_eq!(r.header("Content-Length"), Some("4"));
    let r = t.get(&path, &[("Range", "bytes=-3")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &b"789"[..]));
    let r = t.get(&path, &[("Range", "bytes=10-")]);
    assert_eq!((r.status, r.error_code().as_str()), (416, "RANGE_INVALID"));
    assert_eq!(r.header("Content-Range"), Some("bytes */10"));
    let r = t.get(&path, &[("Range", "bytes=0-1,4-5")]);
    assert_eq!((r.status, r.body.len()), (200, 10));
    assert_eq!(t.get(&path, &[]).header("Accept-Ranges"), Some("bytes"));
}

#[cfg(feature = "selftest")]
#[test]
fn storage_self_test_is_hidden_unless_enabled() {
    let t = TestRegistry::new();
    assert_eq!(t.send(Method::Post, "/_wharf/selftest", &[], MemoryBody::empty()).status, 404);
    let on = TestRegistry::with_config(Config { selftest: true, ..Config::default() });
    let r = on.send(Method::Post, "/_wharf/selftest", &[], MemoryBody::empty());
    assert_eq!(r.status, 200);
    assert!(r.json()["objects"].as_array().unwrap().iter().all(|c| c["error"].is_null()));
}

#[cfg(feature = "selftest")]
#[test]
fn the_floor_of_a_manifest_push_is_one_r2_put_then_one_kv_put() {
    let on = TestRegistry::with_config(Config { selftest: true, ..Config::default() });
    on.operations.take();
    let r = on.send(Method::Put, "/_wharf/selftest/floor", &[], MemoryBody::from_bytes(b"{}".to_vec()));
    assert_eq!(r.status, 201);
    let c = on.operations.take();
    assert_eq!((c.r2_reads, c.r2_writes, c.kv_reads, c.kv_writes, c.round_trips), (0, 1, 0, 1, 2));
    assert_eq!(
        on.kv.snapshot().get("selftest/floor").map(String::as_str),
        Some(Digest::sha256_of(b"{}").to_string().as_str())
    );
}

/// Go's decoder takes the last of two `layers`, other parsers the first: a member wharf acts on
/// given twice is refused, so that no two clients disagree about what a stored manifest says.
#[test]
fn a_manifest_member_given_twice_is_manifest_invalid_where_once_is_accepted() {
    let t = TestRegistry::new();
    let good = String::from_utf8(t.image_manifest("r", OCI_MANIFEST, "x")).unwrap();
    let other = String::from_utf8(t.image_manifest("r", OCI_MANIFEST, "y")).unwrap();
    let member = |body: &str, name: &str| body[body.find(&format!(r#""{name}":"#)).unwrap()..body.len() - 1].to_owned();
    let (layers, other_layers) = (member(&good, "layers"), member(&other, "layers"));
    let without_layers = good.replace(&format!(",{layers}"), "");
    let with = |body: &str, members: &[&str]| format!("{},{}}}", &body[..body.len() - 1], members.join(","));
    let subject = |d: &Digest| format!(r#""subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":1}}"#);
    let (s1, s2) = (subject(&Digest::sha256_of(b"one")), subject(&Digest::sha256_of(b"two")));

    let put = |body: &str, ct: &str| {
        let r = t.put_manifest("r", "v1", ct, body.as_bytes());
        let code = if r.status < 300 { String::new() } else { r.error_code() };
        (r.status, code)
    };
    let refused = (400, "MANIFEST_INVALID".to_owned());
    assert_eq!(put(&with(&without_layers, &[&other_layers]), OCI_MANIFEST).0, 201);
    assert_eq!(put(&with(&good, &[&other_layers]), OCI_MANIFEST), refused, "layers twice");
    assert_eq!(put(&with(&good, &[&s1]), OCI_MANIFEST).0, 201);
    assert_eq!(put(&with(&good, &[&s1, &s2]), OCI_MANIFEST), refused, "subject twice");

    let (image, child) = (good.as_bytes(), Digest::sha256_of(good.as_bytes()));
    let index = String::from_utf8(list_body(OCI_INDEX, &[(&child, image.len(), OCI_MANIFEST, "amd64")])).unwrap();
    let other_child = Digest::sha256_of(other.as_bytes());
    for (body, digest) in [(image, &child), (other.as_bytes(), &other_child)] {
        assert_eq!(t.put_manifest("r", &digest.to_string(), OCI_MANIFEST, body).status, 201);
    }
    let other_index = list_body(OCI_INDEX, &[(&other_child, other.len(), OCI_MANIFEST, "arm64")]);
    let other_manifests = member(std::str::from_utf8(&other_index).unwrap(), "manifests");
    assert_eq!(put(&index, OCI_INDEX).0, 201);
    assert_eq!(put(&with(&index, &[&other_manifests]), OCI_INDEX), refused, "manifests twice");
}

// ---------------------------------------------------------------- bad input catalogue
//
// Each case: a request that must get a given status and OCI code, and must change nothing.

#[test]
fn bad_input_gets_the_right_oci_error_and_changes_nothing() {
    let t = TestRegistry::new();
    let (good, _) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let session = start_session(&t, "r");
    let good = String::from_utf8(good).unwrap();
    let missing = Digest::sha256_of(b"missing");
    let zero = "0".repeat(64);
    let index_without_manifests = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#);
    let bad_layer_digest = good.replacen("sha256:", "sha256:X", 2);
    let wrong_body_media = good.replace(OCI_MANIFEST, DOCKER_MANIFEST);
    let schema1 = good.replace("\"schemaVersion\":2", "\"schemaVersion\":1");
    let no_layers = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"a","digest":"{missing}","size":1}}}}"#
    );
    let docker_without_media = good.replace(&format!(r#""mediaType":"{OCI_MANIFEST}","#), "");
    let with_missing_config = good.replace(
        &serde_json::from_str::<serde_json::Value>(&good).unwrap()["config"]["digest"].as_str().unwrap().to_owned(),
        &missing.to_string(),
    );
    let long_name = format!("/v2/{}/manifests/v1", "a".repeat(256));
    let long_tag = format!("/v2/r/manifests/{}", "t".repeat(129));

    type Case<'a> = (Method, String, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let put = |path: &str, ct: &'static str, body: &str| -> Case<'static> {
        (Method::Put, path.to_owned(), vec![("Content-Type", ct)], body.as_bytes().to_vec(), 0, "")
    };
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |mut c: Case<'static>, status: u16, code: &'static str| {
        c.4 = status;
        c.5 = code;
        cases.push(c);
    };
    // names
    add(put("/v2/UPPER/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put("/v2/a..b/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put("/v2/a//b/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put("/v2/-a/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put(&long_name, OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add((Method::Get, "/v2/a%20b/blobs/uploads/".into(), vec![], vec![], 0, ""), 400, "NAME_INVALID");
    // tags and references
    add(put("/v2/r/manifests/-bad", OCI_MANIFEST, &good), 400, "TAG_INVALID");
    add(put("/v2/r/manifests/.hidden", OCI_MANIFEST, &good), 400, "TAG_INVALID");
    add(put(&long_tag, OCI_MANIFEST, &good), 400, "TAG_INVALID");
    // digests
    add(put(&format!("/v2/r/manifests/sha256:{zero}"), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add(put("/v2/r/manifests/sha256:abc", OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add(put(&format!("/v2/r/manifests/md5:{zero}"), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add(put(&format!("/v2/r/manifests/sha256:{}", zero.to_uppercase()), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add((Method::Get, "/v2/r/blobs/sha256:xyz".into(), vec![], vec![], 0, ""), 400, "DIGEST_INVALID");
    add((Method::Put, format!("{session}?digest=nope"), vec![], b"x".to_vec(), 0, ""), 400, "DIGEST_INVALID");
    add((Method::Put, session.clone(), vec![], b"x".to_vec(), 0, ""), 400, "DIGEST_INVALID");
    add(
        (Method::Post, "/v2/r/blobs/uploads/?digest=sha256:1".into(), vec![], b"x".to_vec(), 0, ""),
        400,
        "DIGEST_INVALID",
    );
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &bad_layer_digest), 400, "DIGEST_INVALID");
    // media types and JSON
    add(put("/v2/r/manifests/v9", "application/json", &good), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", "", &good), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_INDEX, &good), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", DOCKER_MANIFEST, &good), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &wrong_body_media), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", DOCKER_MANIFEST, &docker_without_media), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, "{not json"), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, ""), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, "[1,2]"), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &schema1), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &no_layers), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_INDEX, &index_without_manifests), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &good.replace("\"size\":", "\"size\":\"")), 400, "MANIFEST_INVALID");
    // references
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &with_missing_config), 400, "MANIFEST_BLOB_UNKNOWN");
    let size_lie = good.replacen("\"size\":", "\"size\":9223372036854775807,\"x\":", 1);
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &size_lie), 400, "MANIFEST_BLOB_UNKNOWN");
    let foreign_ftp = good.replacen(
        "application/vnd.oci.image.layer.v1.tar+gzip\",",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip\",\"urls\":[\"ftp://example.com/l\"],",
        1,
    );
    assert_ne!(foreign_ftp, good);
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &foreign_ftp), 400, "MANIFEST_BLOB_UNKNOWN");
    for reference in [".INVALID_MANIFEST_NAME", "sha256:abc"] {
        let path = format!("/v2/r/manifests/{reference}");
        add((Method::Get, path.clone(), vec![], vec![], 0, ""), 404, "MANIFEST_UNKNOWN");
        add((Method::Delete, path, vec![], vec![], 0, ""), 404, "MANIFEST_UNKNOWN");
    }
    add(put(&format!("/v2/r/manifests/{missing}"), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    // sizes
    add(
        (
            Method::Put,
            "/v2/r/manifests/v9".into(),
            vec![("Content-Type", OCI_MANIFEST), ("Content-Length", "4194305")],
            b"{}".to_vec(),
            0,
            "",
        ),
        413,
        "SIZE_INVALID",
    );
    // uploads
    add(
        (Method::Patch, format!("/v2/r/blobs/uploads/{}", "f".repeat(32)), vec![], b"x".to_vec(), 0, ""),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    add(
        (Method::Patch, "/v2/r/blobs/uploads/not-an-id".into(), vec![], b"x".to_vec(), 0, ""),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    add((Method::Patch, session.clone(), vec![("Content-Range", "9-10")], b"xy".to_vec(), 0, ""), 416, "RANGE_INVALID");
    // methods
    add((Method::Post, "/v2/r/manifests/v1".into(), vec![], vec![], 0, ""), 405, "UNSUPPORTED");
    add((Method::Other, "/v2/".into(), vec![], vec![], 0, ""), 405, "UNSUPPORTED");
    add((Method::Patch, "/v2/r/blobs/uploads/".into(), vec![], vec![], 0, ""), 405, "UNSUPPORTED");
    add(
        (Method::Post, "/v2/r/blobs/uploads/?mount=sha256:1&from=r".into(), vec![], vec![], 0, ""),
        400,
        "DIGEST_INVALID",
    );
    add(
        (Method::Post, format!("/v2/r/blobs/uploads/?mount={missing}&from=Bad"), vec![], vec![], 0, ""),
        400,
        "NAME_INVALID",
    );

    // chunks that are out of order or not the length they claim, in every request carrying bytes
    let sixteen = "x".repeat(16);
    let d16 = Digest::sha256_of(sixteen.as_bytes());
    let upload = |m: Method, path: String, h: Vec<(&'static str, &'static str)>| -> Case<'static> {
        (m, path, h, sixteen.clone().into_bytes(), 0, "")
    };
    let cl16 = ("Content-Length", "16");
    add(upload(Method::Patch, session.clone(), vec![("Content-Range", "0-999"), cl16]), 400, "SIZE_INVALID");
    add(upload(Method::Patch, session.clone(), vec![("Content-Range", "0-7")]), 400, "SIZE_INVALID");
    add(upload(Method::Patch, session.clone(), vec![("Content-Length", "64")]), 400, "BLOB_UPLOAD_INVALID");
    let finish = format!("{session}?digest={d16}");
    add(upload(Method::Put, finish.clone(), vec![("Content-Range", "1-16"), cl16]), 416, "RANGE_INVALID");
    add(upload(Method::Put, finish.clone(), vec![("Content-Range", "0-999"), cl16]), 400, "SIZE_INVALID");
    add(upload(Method::Put, finish.clone(), vec![("Content-Length", "64")]), 400, "BLOB_UPLOAD_INVALID");
    let monolithic = format!("/v2/r/blobs/uploads/?digest={d16}");
    add(upload(Method::Post, monolithic.clone(), vec![("Content-Range", "5-20"), cl16]), 416, "RANGE_INVALID");
    add(upload(Method::Post, monolithic.clone(), vec![("Content-Range", "0-999"), cl16]), 400, "SIZE_INVALID");
    add(upload(Method::Post, monolithic, vec![("Content-Length", "64")]), 400, "BLOB_UPLOAD_INVALID");
    // encoded slashes: data inside their segment, never a separator
    add(
        (Method::Get, "/v2/r/blobs/sha256:..%2F..%2Fetc%2Fpasswd".into(), vec![], vec![], 0, ""),
        400,
        "DIGEST_INVALID",
    );
    add(put("/v2/r/manifests/a%2Fb", OCI_MANIFEST, &good), 400, "TAG_INVALID");
    let climbing_id = session.replace("/uploads/", "/uploads/..%2F");
    add((Method::Patch, climbing_id, vec![], b"x".to_vec(), 0, ""), 404, "BLOB_UPLOAD_UNKNOWN");
    add(put("/v2/r%2Fv1/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");

    // paths that try to climb or smuggle (decoded inside each segment)
    add(put("/v2/a/../b/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put("/v2/a/%2e%2e/b/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put("/v2/a/%2E%2E/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put("/v2/./manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put("/v2/r%2F/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put("/v2/caf%C3%A9/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put("/v2/a_/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put("/v2/a/B/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add(put("/v2/a%00b/manifests/v1", OCI_MANIFEST, &good), 400, "NAME_INVALID");
    add((Method::Get, "/v2/r%/tags/list".into(), vec![], vec![], 0, ""), 400, "NAME_INVALID");
    // tags at and past their limits, and odd characters
    add(put("/v2/r/manifests/v%C3%A9", OCI_MANIFEST, &good), 400, "TAG_INVALID");
    add(put("/v2/r/manifests/a%20b", OCI_MANIFEST, &good), 400, "TAG_INVALID");
    add(put("/v2/r/manifests/a%00", OCI_MANIFEST, &good), 400, "TAG_INVALID");
    // digests of every wrong shape, and unknown algorithms
    add(put("/v2/r/manifests/sha256:", OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add(put(&format!("/v2/r/manifests/sha256:{}", &zero[..63]), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add(put(&format!("/v2/r/manifests/sha256:{zero}0"), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add(put(&format!("/v2/r/manifests/sha512:{zero}"), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add(put(&format!("/v2/r/manifests/SHA256:{zero}"), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add(put(&format!("/v2/r/manifests/blake3:{zero}"), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add(put(&format!("/v2/r/manifests/:{zero}"), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add(put(&format!("/v2/r/manifests/sha256:{}g", &zero[..63]), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add(put(&format!("/v2/r/manifests/sha256:{zero}:x"), OCI_MANIFEST, &good), 400, "DIGEST_INVALID");
    add((Method::Get, format!("/v2/r/blobs/sha256+b64:{zero}"), vec![], vec![], 0, ""), 400, "DIGEST_INVALID");
    add((Method::Get, "/v2/r/referrers/sha256:short".into(), vec![], vec![], 0, ""), 400, "DIGEST_INVALID");
    add((Method::Post, "/v2/r/blobs/uploads/?digest=".into(), vec![], b"x".to_vec(), 0, ""), 400, "DIGEST_INVALID");
    add((Method::Post, "/v2/r/blobs/uploads/?mount=&from=r".into(), vec![], vec![], 0, ""), 400, "DIGEST_INVALID");
    // wrong methods
    add((Method::Delete, "/v2/".into(), vec![], vec![], 0, ""), 405, "UNSUPPORTED");
    add((Method::Put, "/v2/_catalog".into(), vec![], b"x".to_vec(), 0, ""), 405, "UNSUPPORTED");
    add((Method::Post, "/v2/r/tags/list".into(), vec![], vec![], 0, ""), 405, "UNSUPPORTED");
    add((Method::Patch, "/v2/r/manifests/v1".into(), vec![], b"x".to_vec(), 0, ""), 405, "UNSUPPORTED");
    add((Method::Post, format!("/v2/r/blobs/{missing}"), vec![], vec![], 0, ""), 405, "UNSUPPORTED");
    add((Method::Delete, format!("/v2/r/referrers/{missing}"), vec![], vec![], 0, ""), 405, "UNSUPPORTED");
    add((Method::Get, "/v2/r/nothing/here".into(), vec![], vec![], 0, ""), 404, "UNSUPPORTED");
    // garbage Content-Range and Range
    for range in ["abc", "bytes */*", "5-3", "-1-2", "1-", "bytes=0-", "18446744073709551616-18446744073709551617"] {
        add(
            (Method::Patch, session.clone(), vec![("Content-Range", range)], b"xy".to_vec(), 0, ""),
            416,
            "RANGE_INVALID",
        );
    }
    let blob = t.push_blob("r", b"0123456789");
    add(
        (Method::Get, format!("/v2/r/blobs/{blob}"), vec![("Range", "bytes=10-")], vec![], 0, ""),
        416,
        "RANGE_INVALID",
    );
    add((Method::Get, format!("/v2/r/blobs/{blob}"), vec![("Range", "bytes=-0")], vec![], 0, ""), 416, "RANGE_INVALID");
    add(
        (Method::Get, format!("/v2/r/blobs/{blob}"), vec![("Range", "bytes=99999999999999999999-")], vec![], 0, ""),
        200,
        "",
    );
    // JSON that is deep, duplicated, mistyped, oversized, empty or not UTF-8
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &deep), 400, "MANIFEST_INVALID");
    let deep_ignored = good.replacen('{', &format!(r#"{{"x":{}{},"#, "[".repeat(10_000), "]".repeat(10_000)), 1);
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &deep_ignored), 400, "MANIFEST_INVALID");
    add(
        put("/v2/r/manifests/v9", OCI_MANIFEST, &good.replacen('{', r#"{"schemaVersion":2,"#, 1)),
        400,
        "MANIFEST_INVALID",
    );
    // A member wharf acts on given twice: two readers could each see another one.
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &good.replacen('{', r#"{"layers":[],"#, 1)), 400, "MANIFEST_INVALID");
    let subject = format!(r#""subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{missing}","size":1}}"#);
    add(
        put("/v2/r/manifests/v9", OCI_MANIFEST, &good.replacen('{', &format!("{{{subject},{subject},"), 1)),
        400,
        "MANIFEST_INVALID",
    );
    let index = String::from_utf8(list_body(
        OCI_INDEX,
        &[(&Digest::sha256_of(good.as_bytes()), good.len(), OCI_MANIFEST, "amd64")],
    ))
    .unwrap();
    add(put("/v2/r/manifests/v9", OCI_INDEX, &index.replacen('{', r#"{"manifests":[],"#, 1)), 400, "MANIFEST_INVALID");
    add(
        put("/v2/r/manifests/v9", OCI_MANIFEST, &good.replace("\"schemaVersion\":2", "\"schemaVersion\":\"2\"")),
        400,
        "MANIFEST_INVALID",
    );
    add(
        put(
            "/v2/r/manifests/v9",
            OCI_MANIFEST,
            &good.replace("\"layers\":[", "\"layers\":{\"a\":[").replace("]}", "]}}"),
        ),
        400,
        "MANIFEST_INVALID",
    );
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &good.replacen("\"size\":", "\"size\":-", 1)), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, "null"), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, "{}"), 400, "MANIFEST_INVALID");
    add(put("/v2/r/manifests/v9", OCI_MANIFEST, &format!("{good} trailing")), 400, "MANIFEST_INVALID");
    let mut not_utf8 = good.clone().into_bytes();
    not_utf8.insert(not_utf8.len() - 1, 0xff);
    add(
        (Method::Put, "/v2/r/manifests/v9".into(), vec![("Content-Type", OCI_MANIFEST)], not_utf8, 0, ""),
        400,
        "MANIFEST_INVALID",
    );
    let mut oversized = good.clone().into_bytes();
    oversized.resize(4 * 1024 * 1024 + 1, b' ');
    add(
        (Method::Put, "/v2/r/manifests/v9".into(), vec![("Content-Type", OCI_MANIFEST)], oversized, 0, ""),
        413,
        "SIZE_INVALID",
    );
    // headers: huge, and Accept that allows nothing stored
    let huge = "x".repeat(1 << 20);
    let huge: &'static str = Box::leak(huge.into_boxed_str());
    add(put("/v2/r/manifests/v9", huge, &good), 400, "MANIFEST_INVALID");
    add((Method::Get, "/v2/r/manifests/v1".into(), vec![("Accept", huge)], vec![], 0, ""), 404, "MANIFEST_UNKNOWN");
    add((Method::Get, "/v2/r/manifests/v1".into(), vec![("Accept", ";;;,,,")], vec![], 0, ""), 404, "MANIFEST_UNKNOWN");
    add(
        (Method::Get, "/v2/r/manifests/v1".into(), vec![("Accept", DOCKER_MANIFEST)], vec![], 0, ""),
        404,
        "MANIFEST_UNKNOWN",
    );
    // pagination
    for n in ["-1", "abc", "1001", "1e3"] {
        let path = format!("/v2/r/tags/list?n={n}");
        add((Method::Get, path, vec![], vec![], 0, ""), 400, "PAGINATION_NUMBER_INVALID");
    }
    add((Method::Get, "/v2/_catalog?n=x".into(), vec![], vec![], 0, ""), 400, "PAGINATION_NUMBER_INVALID");

    assert!(cases.len() >= 80, "{} cases", cases.len());
    for (method, path, headers, body, status, code) in cases {
        let before = t.snapshot();
        let what = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let r = t.send(method, &path, &headers, MemoryBody::from_bytes(body));
        if status < 300 {
            // An unreadable Range is ignored (RFC 9110 allows it): the whole blob.
            assert_eq!(r.status, status, "{method:?} {path}");
        } else {
            let got = if r.status < 300 { String::new() } else { r.error_code() };
            assert_eq!(
                (r.status, got.as_str()),
                (status, code),
                "{method:?} {path} {what:?}: {:?}",
                String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
            );
            assert_eq!(r.header("Content-Type"), Some("application/json"), "{path}");
        }
        assert_eq!(t.snapshot(), before, "{method:?} {path} changed storage");
    }
}
