//! Every kind of request fits the Free plan: at most 50 subrequests (each R2 and KV call
//! counted as one) and 1,000 KV operations, on the platform model
//! (`wharf::storage::memory::Platform`), in a registry with more content than one page of
//! anything. Garbage collection is the exception (`docs/limits.md`).

mod common;

use common::*;
use wharf::Config;
use wharf::base::http::{MemoryBody, Method};
use wharf::base::names::Digest;
use wharf::storage::memory::{FREE_PLAN_SUBREQUESTS, Usage};

/// A registry on the Free plan's budgets, with the UI on and deletes allowed.
fn free_plan() -> TestRegistry {
    let config = Config { delete_enabled: true, ui: true, max_page: 100, ..Config::default() };
    TestRegistry::on_platform(config, FREE_PLAN_SUBREQUESTS)
}

/// Sends the request from a cold isolate of another location and returns its status and what
/// it used of the budgets.
fn cold(t: &TestRegistry, method: Method, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Usage) {
    let location = t.another_location();
    let r = location.send(method, path, headers, MemoryBody::from_bytes(body.to_vec()));
    assert!(r.status < 500, "{method:?} {path}: {} {}", r.status, String::from_utf8_lossy(&r.body));
    (r.status, location.usage())
}

fn within_budget(what: &str, (status, usage): (u16, Usage), expected_status: u16) {
    assert_eq!(status, expected_status, "{what}");
    assert!(usage.subrequests <= FREE_PLAN_SUBREQUESTS, "{what}: {usage:?}");
    println!("{what}: {} subrequests", usage.subrequests);
}

#[test]
fn every_request_kind_fits_the_free_plan() {
    let t = free_plan();
    // A repository of 150 tags over 30 manifests, with referrers; 120 other repositories.
    let mut digests = Vec::new();
    for i in 0..30 {
        let (_, d) = t.push_image("big/app", &format!("v{i:03}"), OCI_MANIFEST, &format!("image {i}"));
        digests.push(d);
        t.wait(1);
    }
    for i in 0..150 {
        let body = t.get(&format!("/v2/big/app/manifests/{}", digests[i % 30]), &[("Accept", OCI_MANIFEST)]).body;
        assert_eq!(t.put_manifest("big/app", &format!("t{i:03}"), OCI_MANIFEST, &body).status, 201);
    }
    for i in 0..120 {
        t.push_image(&format!("other/r{i:03}"), "v1", OCI_MANIFEST, &format!("other {i}"));
    }
    let subject = &digests[0];
    let config = t.push_blob("big/app", b"{}");
    for i in 0..5 {
        let artifact = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":1}},"annotations":{{"n":"{}"}}}}"#,
            "x".repeat(i * 1000)
        );
        let d = Digest::sha256_of(artifact.as_bytes());
        assert_eq!(t.put_manifest("big/app", &d.to_string(), OCI_MANIFEST, artifact.as_bytes()).status, 201);
    }
    t.wait(2);
    let accept = [("Accept", ACCEPT_ALL)];
    let d = digests[1].to_string();

    within_budget("GET /v2/", cold(&t, Method::Get, "/v2/", &[], b""), 200);
    within_budget("HEAD by tag", cold(&t, Method::Head, "/v2/big/app/manifests/t010", &accept, b""), 200);
    within_budget("GET by tag", cold(&t, Method::Get, "/v2/big/app/manifests/t010", &accept, b""), 200);
    within_budget("GET by digest", cold(&t, Method::Get, &format!("/v2/big/app/manifests/{d}"), &accept, b""), 200);
    within_budget("GET unknown tag", cold(&t, Method::Get, "/v2/big/app/manifests/nope", &accept, b""), 404);
    within_budget("tags/list", cold(&t, Method::Get, "/v2/big/app/tags/list", &[], b""), 200);
    within_budget("tags/list, deep", cold(&t, Method::Get, "/v2/big/app/tags/list?n=50&last=t120", &[], b""), 200);
    within_budget("_catalog", cold(&t, Method::Get, "/v2/_catalog?n=50&last=other/r050", &[], b""), 200);
    within_budget("referrers", cold(&t, Method::Get, &format!("/v2/big/app/referrers/{subject}"), &[], b""), 200);

    // Blobs and uploads.
    let blob = b"a blob of the free plan".to_vec();
    let bd = Digest::sha256_of(&blob);
    let path = format!("/v2/big/app/blobs/uploads/?digest={bd}");
    within_budget("monolithic upload", cold(&t, Method::Post, &path, &[], &blob), 201);
    within_budget("HEAD blob", cold(&t, Method::Head, &format!("/v2/big/app/blobs/{bd}"), &[], b""), 200);
    within_budget("GET blob", cold(&t, Method::Get, &format!("/v2/big/app/blobs/{bd}"), &[], b""), 200);
    let mount = format!("/v2/copy/app/blobs/uploads/?mount={bd}&from=big/app");
    within_budget("mount", cold(&t, Method::Post, &mount, &[], b""), 201);
    let start = t.send(Method::Post, "/v2/big/app/blobs/uploads/", &[], MemoryBody::empty());
    let location = start.header("Location").unwrap().to_owned();
    let chunk = vec![7u8; 6 << 20];
    let range = [("Content-Range", "0-6291455")];
    within_budget("PATCH a chunk", cold(&t, Method::Patch, &location, &range, &chunk), 202);
    t.wait(1);
    within_budget("upload status", cold(&t, Method::Get, &location, &[], b""), 204);
    let cd = Digest::sha256_of(&chunk);
    let close = format!("{location}{}digest={cd}", if location.contains('?') { '&' } else { '?' });
    within_budget("closing PUT", cold(&t, Method::Put, &close, &[], b""), 201);

    // Pushes and deletes.
    let body = t.image_manifest("big/app", OCI_MANIFEST, "pushed on the free plan");
    t.wait(1);
    let headers = [("Content-Type", OCI_MANIFEST)];
    within_budget("PUT manifest", cold(&t, Method::Put, "/v2/big/app/manifests/new", &headers, &body), 201);
    t.wait(1);
    within_budget("DELETE tag", cold(&t, Method::Delete, "/v2/big/app/manifests/t000", &[], b""), 202);
    t.wait(1);
    within_budget("DELETE manifest", cold(&t, Method::Delete, &format!("/v2/big/app/manifests/{d}"), &[], b""), 202);
    t.wait(1);
    within_budget("DELETE blob", cold(&t, Method::Delete, &format!("/v2/big/app/blobs/{bd}"), &[], b""), 202);

    // The web UI.
    within_budget("UI home", cold(&t, Method::Get, "/ui/", &[], b""), 200);
    within_budget("UI search", cold(&t, Method::Get, "/ui/?q=r11", &[], b""), 200);
    within_budget("UI repository", cold(&t, Method::Get, "/ui/repo/big/app", &[], b""), 200);
    let page = format!("/ui/repo/big/app/manifest/{}", digests[2]);
    within_budget("UI manifest", cold(&t, Method::Get, &page, &[], b""), 200);
}

#[test]
fn large_images_and_indexes_push_within_the_free_plan() {
    let t = free_plan();
    // 100 layers and 40 platforms, pushed through an isolate that saw none of their uploads.
    let layers: Vec<String> = (0..100)
        .map(|i| {
            let bytes = format!("layer {i}");
            let d = t.push_blob("big/image", bytes.as_bytes());
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{}}}"#, bytes.len())
        })
        .collect();
    let config = t.push_blob("big/image", b"{}");
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{}]}}"#,
        layers.join(",")
    );
    t.wait(1);
    let headers = [("Content-Type", OCI_MANIFEST)];
    let pushed = cold(&t, Method::Put, "/v2/big/image/manifests/v1", &headers, image.as_bytes());
    within_budget("PUT a manifest of 100 layers", pushed, 201);

    let children: Vec<(Digest, usize)> = (0..40)
        .map(|i| {
            let (body, d) = t.push_image("big/image", &format!("p{i}"), OCI_MANIFEST, &format!("platform {i}"));
            (d, body.len())
        })
        .collect();
    let entries: Vec<(&Digest, usize, &str, &str)> =
        children.iter().map(|(d, n)| (d, *n, OCI_MANIFEST, "amd64")).collect();
    let index = list_body(OCI_INDEX, &entries);
    t.wait(1);
    let headers = [("Content-Type", OCI_INDEX)];
    let pushed = cold(&t, Method::Put, "/v2/big/image/manifests/multi", &headers, &index);
    within_budget("PUT an index of 40 platforms", pushed, 201);
}
