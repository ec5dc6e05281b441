//! Content discovery and management over the in-memory backends: tags/list, _catalog and
//! referrers with their pagination, multi-tag pushes, and deletes reflected everywhere.

mod common;

use common::*;
use wharf::Config;
use wharf::base::http::{MemoryBody, Method};
use wharf::base::names::Digest;

fn small_pages(max_page: usize) -> TestRegistry {
    TestRegistry::with_config(Config { delete_enabled: true, max_page, ..Config::default() })
}

/// Pushes one image and tags it with every tag given.
fn tag_all(t: &TestRegistry, repo: &str, tags: &[&str]) -> Digest {
    let body = t.image_manifest(repo, OCI_MANIFEST, repo);
    for tag in tags {
        assert_eq!(t.put_manifest(repo, tag, OCI_MANIFEST, &body).status, 201, "{tag}");
    }
    Digest::sha256_of(&body)
}

fn tags_of(r: &TestResponse) -> Vec<String> {
    r.json()["tags"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

/// Follows `Link` headers from `path`, returning every page's tags.
fn follow(t: &TestRegistry, path: &str, field: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(p) = next.take() {
        let r = t.get(&p, &[]);
        assert_eq!(r.status, 200, "{p}: {:?}", String::from_utf8_lossy(&r.body));
        pages.push(r.json()[field].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect());
        if let Some(link) = r.header("Link") {
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            next = Some(link[1..link.find('>').unwrap()].to_owned());
        }
        assert!(pages.len() < 50, "pagination does not end");
    }
    pages
}

#[test]
fn tags_are_listed_in_lexical_order() {
    let t = TestRegistry::new();
    tag_all(&t, "a/b", &["v2", "latest", "V1", "1.0", "_x"]);
    let r = t.get("/v2/a/b/tags/list", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.json()["name"], "a/b");
    assert_eq!(tags_of(&r), ["1.0", "V1", "_x", "latest", "v2"]);
    assert!(r.header("Link").is_none());
}

#[test]
fn tags_of_an_unknown_repository_are_name_unknown() {
    let t = TestRegistry::new();
    let r = t.get("/v2/nothing/tags/list", &[]);
    assert_eq!((r.status, r.error_code().as_str()), (404, "NAME_UNKNOWN"));
    assert_eq!(t.get("/v2/nothing/tags/list?n=0", &[]).status, 404);
}

#[test]
fn a_repository_without_tags_lists_none() {
    let t = TestRegistry::new();
    let body = t.image_manifest("r", OCI_MANIFEST, "x");
    t.put_manifest("r", &Digest::sha256_of(&body).to_string(), OCI_MANIFEST, &body);
    let r = t.get("/v2/r/tags/list", &[]);
    assert_eq!((r.status, tags_of(&r).len()), (200, 0));
}

#[test]
fn tag_pagination_edge_cases() {
    let t = TestRegistry::new();
    tag_all(&t, "r", &["a", "b", "c", "d"]);
    let cases: &[(&str, &[&str], bool)] = &[
        ("n=0", &[], false),
        ("n=2", &["a", "b"], true),
        ("n=4", &["a", "b", "c", "d"], false),
        ("n=5", &["a", "b", "c", "d"], false),
        ("n=3", &["a", "b", "c"], true),
        ("n=2&last=b", &["c", "d"], false),
        ("n=1&last=b", &["c"], true),
        ("last=a", &["b", "c", "d"], false),
        ("n=2&last=d", &[], false),
        ("n=2&last=zzz", &[], false),
        ("n=2&last=0", &["a", "b"], true),
        // Not a tag at all: placed by its bytes, whatever its length.
        ("n=2&last=a%00", &["b", "c"], true),
        ("n=2&last=%C3%A9", &[], false),
    ];
    let long = format!("n=5&last=a{}", "z".repeat(3000));
    let cases = [cases, &[(long.as_str(), &["b", "c", "d"][..], false)]].concat();
    for (query, tags, link) in &cases {
        let r = t.get(&format!("/v2/r/tags/list?{query}"), &[]);
        assert_eq!(r.status, 200, "{query}");
        assert_eq!(tags_of(&r), *tags, "{query}");
        assert_eq!(r.header("Link").is_some(), *link, "{query}: {:?}", r.header("Link"));
    }
}

#[test]
fn following_tag_links_visits_every_tag_once_in_order() {
    let t = TestRegistry::new();
    let tags: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    tag_all(&t, "r", &refs);
    let pages = follow(&t, "/v2/r/tags/list?n=3", "tags");
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(pages.concat(), tags);
}

#[test]
fn tags_sort_in_byte_order() {
    // Tags are ASCII by their grammar (no unicode can be pushed), and "lexical" is byte order:
    // '-' < '.' < digits < upper case < '_' < lower case.
    let t = TestRegistry::new();
    tag_all(&t, "r", &["b", "B", "_", "9", "a-", "a.", "a_", "a0"]);
    assert_eq!(tags_of(&t.get("/v2/r/tags/list", &[])), ["9", "B", "_", "a-", "a.", "a0", "a_", "b"]);
}

#[test]
fn n_above_the_maximum_or_not_a_number_is_pagination_number_invalid() {
    let t = small_pages(5);
    tag_all(&t, "r", &["a"]);
    for query in ["n=6", "n=-1", "n=x", "n="] {
        let r = t.get(&format!("/v2/r/tags/list?{query}"), &[]);
        assert_eq!((r.status, r.error_code().as_str()), (400, "PAGINATION_NUMBER_INVALID"), "{query}");
    }
    assert_eq!(t.get("/v2/r/tags/list?n=5", &[]).status, 200);
}

#[test]
fn without_n_tags_come_in_pages_of_the_maximum() {
    let t = small_pages(2);
    tag_all(&t, "r", &["a", "b", "c"]);
    let pages = follow(&t, "/v2/r/tags/list", "tags");
    assert_eq!(pages, [vec!["a", "b"], vec!["c"]]);
}

#[test]
fn the_catalog_lists_repositories_with_content_and_paginates() {
    let t = TestRegistry::new();
    for repo in ["b", "a/x", "a", "c/d/e"] {
        tag_all(&t, repo, &["v1"]);
    }
    // A repository with only blobs is not in the catalog.
    t.push_blob("blobs-only", b"x");
    let r = t.get("/v2/_catalog", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["repositories"], serde_json::json!(["a", "a/x", "b", "c/d/e"]));
    let pages = follow(&t, "/v2/_catalog?n=3", "repositories");
    assert_eq!(pages, [vec!["a", "a/x", "b"], vec!["c/d/e"]]);
    assert_eq!(t.get("/v2/_catalog?n=1&last=b", &[]).json()["repositories"], serde_json::json!(["c/d/e"]));
    let empty = t.get("/v2/_catalog?n=0", &[]);
    assert_eq!((empty.json()["repositories"].as_array().unwrap().len(), empty.header("Link")), (0, None));
    assert_eq!(t.get("/v2/_catalog?n=1001", &[]).error_code(), "PAGINATION_NUMBER_INVALID");
}

#[test]
fn a_repository_leaves_the_catalog_with_its_last_manifest() {
    let t = TestRegistry::new();
    let d1 = tag_all(&t, "r", &["v1"]);
    let (_, d2) = t.push_image("r", "v2", OCI_MANIFEST, "second");
    assert_eq!(t.delete(&format!("/v2/r/manifests/{d1}")).status, 202);
    assert_eq!(t.get("/v2/_catalog", &[]).json()["repositories"], serde_json::json!(["r"]));
    assert_eq!(t.delete(&format!("/v2/r/manifests/{d2}")).status, 202);
    assert_eq!(t.get("/v2/_catalog", &[]).json()["repositories"], serde_json::json!([]));
    assert_eq!(t.get("/v2/r/tags/list", &[]).status, 404);
}

#[test]
fn a_push_by_digest_with_tag_parameters_tags_each() {
    let t = TestRegistry::new();
    let body = t.image_manifest("r", OCI_MANIFEST, "x");
    let d = Digest::sha256_of(&body);
    let r = t.send(
        Method::Put,
        &format!("/v2/r/manifests/{d}?tag=a&tag=b&tag=c"),
        &[("Content-Type", OCI_MANIFEST)],
        MemoryBody::from_bytes(body.clone()),
    );
    assert_eq!(r.status, 201);
    assert_eq!(tags_of(&t.get("/v2/r/tags/list", &[])), ["a", "b", "c"]);
    let before = t.snapshot();
    let bad = t.send(
        Method::Put,
        &format!("/v2/r/manifests/{d}?tag=ok&tag=-bad"),
        &[("Content-Type", OCI_MANIFEST)],
        MemoryBody::from_bytes(body),
    );
    assert_eq!((bad.status, bad.error_code().as_str()), (400, "TAG_INVALID"));
    assert_eq!(t.snapshot(), before);
}

#[test]
fn deleting_a_tag_or_manifest_is_reflected_in_the_tag_list() {
    let t = TestRegistry::new();
    let d = tag_all(&t, "r", &["a", "b"]);
    t.push_image("r", "c", OCI_MANIFEST, "other");
    assert_eq!(t.delete("/v2/r/manifests/a").status, 202);
    assert_eq!(tags_of(&t.get("/v2/r/tags/list", &[])), ["b", "c"]);
    assert_eq!(t.delete(&format!("/v2/r/manifests/{d}")).status, 202);
    assert_eq!(tags_of(&t.get("/v2/r/tags/list", &[])), ["c"]);
}

/// Pushes an artifact manifest referring to `subject`; returns its digest.
fn push_referrer(
    t: &TestRegistry,
    repo: &str,
    subject: &Digest,
    artifact_type: Option<&str>,
    config_type: &str,
    note: &str,
) -> Digest {
    let config = t.push_blob(repo, b"{}");
    let artifact = artifact_type.map(|a| format!(r#""artifactType":"{a}","#)).unwrap_or_default();
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",{artifact}"config":{{"mediaType":"{config_type}","digest":"{config}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":1}},"annotations":{{"note":"{note}"}}}}"#
    );
    let d = Digest::sha256_of(body.as_bytes());
    let r = t.put_manifest(repo, &d.to_string(), OCI_MANIFEST, body.as_bytes());
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("OCI-Subject"), Some(subject.to_string().as_str()));
    d
}

#[test]
fn referrers_are_listed_with_artifact_type_and_annotations() {
    let t = TestRegistry::new();
    let (_, subject) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let sbom = push_referrer(
        &t,
        "r",
        &subject,
        Some("application/vnd.example.sbom"),
        "application/vnd.oci.empty.v1+json",
        "s",
    );
    let sig = push_referrer(&t, "r", &subject, None, "application/vnd.example.sig.config", "g");
    let r = t.get(&format!("/v2/r/referrers/{subject}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some(OCI_INDEX));
    let index = r.json();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    let by_digest = |d: &Digest| manifests.iter().find(|m| m["digest"] == d.to_string()).unwrap().clone();
    assert_eq!(by_digest(&sbom)["artifactType"], "application/vnd.example.sbom");
    assert_eq!(by_digest(&sbom)["annotations"]["note"], "s");
    assert_eq!(by_digest(&sbom)["mediaType"], OCI_MANIFEST);
    assert!(by_digest(&sbom)["size"].as_u64().unwrap() > 0);
    // Without its own artifactType, a referrer is listed with its config's media type.
    assert_eq!(by_digest(&sig)["artifactType"], "application/vnd.example.sig.config");
    assert!(r.header("OCI-Filters-Applied").is_none());
}

#[test]
fn referrers_filtered_by_artifact_type_say_so() {
    let t = TestRegistry::new();
    let (_, subject) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let sbom = push_referrer(&t, "r", &subject, Some("application/vnd.example.sbom"), "c", "1");
    push_referrer(&t, "r", &subject, Some("application/vnd.example.sig"), "c", "2");
    let r = t.get(&format!("/v2/r/referrers/{subject}?artifactType=application/vnd.example.sbom"), &[]);
    assert_eq!(r.header("OCI-Filters-Applied"), Some("artifactType"));
    let manifests = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["digest"], sbom.to_string());
    let none = t.get(&format!("/v2/r/referrers/{subject}?artifactType=application/none"), &[]);
    assert_eq!(none.json()["manifests"].as_array().unwrap().len(), 0);
}

#[test]
fn referrers_of_an_unknown_subject_are_an_empty_index_and_a_bad_digest_is_400() {
    let t = TestRegistry::new();
    let r = t.get(&format!("/v2/nowhere/referrers/{}", Digest::sha256_of(b"nothing")), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    let bad = t.get("/v2/r/referrers/sha256:123", &[]);
    assert_eq!((bad.status, bad.error_code().as_str()), (400, "DIGEST_INVALID"));
}

#[test]
fn referrers_paginate_with_link_headers() {
    let t = small_pages(2);
    let (_, subject) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let mut all: Vec<String> =
        (0..5).map(|i| push_referrer(&t, "r", &subject, Some("a/b"), "c", &i.to_string()).to_string()).collect();
    all.sort();
    let mut seen = Vec::new();
    let mut next = Some(format!("/v2/r/referrers/{subject}?artifactType=a/b"));
    while let Some(path) = next.take() {
        let r = t.get(&path, &[]);
        assert_eq!(r.status, 200);
        for m in r.json()["manifests"].as_array().unwrap() {
            seen.push(m["digest"].as_str().unwrap().to_owned());
        }
        next = r.header("Link").map(|l| l[1..l.find('>').unwrap()].to_owned());
    }
    seen.sort();
    assert_eq!(seen, all);
}

#[test]
fn deleting_a_referrer_removes_it_from_the_list() {
    let t = TestRegistry::new();
    let (_, subject) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let sig = push_referrer(&t, "r", &subject, Some("a/sig"), "c", "1");
    let keep = push_referrer(&t, "r", &subject, Some("a/sbom"), "c", "2");
    assert_eq!(t.delete(&format!("/v2/r/manifests/{sig}")).status, 202);
    let r = t.get(&format!("/v2/r/referrers/{subject}"), &[]);
    let digests: Vec<_> =
        r.json()["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_owned()).collect();
    assert_eq!(digests, [keep.to_string()]);
}

#[test]
fn annotations_of_any_size_are_listed_whatever_the_metadata_limit() {
    // The platform model refuses R2 metadata over 8 KiB, as Cloudflare does; the local
    // simulator refuses it over 2 KiB. Annotations past 1 KiB are read from the manifest.
    let t = TestRegistry::on_platform(Config { delete_enabled: true, ..Config::default() }, 50);
    let (_, subject) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let sizes = [500, 1_000, 5_000, 12_000];
    let pushed: Vec<Digest> =
        sizes.iter().map(|n| push_referrer(&t, "r", &subject, Some("a/b"), "c", &"y".repeat(*n))).collect();
    let r = t.get(&format!("/v2/r/referrers/{subject}"), &[]);
    assert_eq!(r.status, 200);
    let listed = r.json();
    for (d, n) in pushed.iter().zip(sizes) {
        let m = listed["manifests"].as_array().unwrap().iter().find(|m| m["digest"] == d.to_string());
        let note = m.unwrap_or_else(|| panic!("{n}: not listed"))["annotations"]["note"].as_str().map(str::len);
        assert_eq!(note, Some(n), "{n}");
    }
    assert!(t.usage().subrequests <= 50, "{:?}", t.usage());
}

#[test]
fn a_kv_write_refused_for_load_is_429_with_retry_after() {
    let t = TestRegistry::new();
    let body = t.image_manifest("r", OCI_MANIFEST, "x");
    t.kv.refuse_puts(true);
    let r = t.put_manifest("r", "v1", OCI_MANIFEST, &body);
    assert_eq!((r.status, r.error_code().as_str()), (429, "TOOMANYREQUESTS"));
    assert_eq!(r.header("Retry-After"), Some("1"));
    t.kv.refuse_puts(false);
    assert_eq!(t.put_manifest("r", "v1", OCI_MANIFEST, &body).status, 201);
}
