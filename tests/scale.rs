//! Listings cost what their page costs, at any depth: the storage operations of a first and a
//! deep page of tags/list (100,000 tags in one repository), _catalog (10,000 repositories),
//! referrers and the web UI's tag pages, counted by the in-memory stores. The registries are
//! filled through the storage contract directly (keys as `wharf::storage::keys` writes them),
//! which takes seconds where 110,000 pushes would take minutes.

mod common;

use common::*;
use futures_executor::block_on;
use wharf::Config;
use wharf::base::names::{Digest, RepositoryName, Tag};
use wharf::storage::keys::{self, TagRecord};
use wharf::storage::memory::Counts;
use wharf::storage::{ObjectStore, PutOptions};

fn put(t: &TestRegistry, key: &str, options: PutOptions) {
    block_on(t.objects.put(key, Vec::new(), options)).expect("put");
}

/// What `path` costs in storage (a GET from a cold isolate), and its answer.
fn cost(t: &TestRegistry, path: &str) -> (Counts, TestResponse) {
    let cold = t.sharing_storage(t.registry.config.as_ref().clone());
    t.operations.take();
    let r = cold.get(path, &[]);
    assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
    (t.operations.take(), r)
}

/// The first and a deep page of a listing cost the same, a single storage operation each.
fn assert_flat(t: &TestRegistry, first: &str, deep: &str) -> (TestResponse, TestResponse) {
    let (first_cost, first_page) = cost(t, first);
    let (deep_cost, deep_page) = cost(t, deep);
    assert_eq!(first_cost, deep_cost, "{first} against {deep}");
    assert!(first_cost.r2_reads + first_cost.kv_reads <= 2, "{first}: {first_cost:?}");
    (first_page, deep_page)
}

#[test]
fn tags_list_and_the_ui_s_tag_pages_cost_the_same_at_any_depth_of_100_000_tags() {
    let t = TestRegistry::with_config(Config { ui: true, ..Config::default() });
    let (_, digest) = t.push_image("big", "seed", OCI_MANIFEST, "one image");
    let name = RepositoryName::parse("big").unwrap();
    let record = TagRecord { digest: digest.to_string(), media_type: OCI_MANIFEST.into(), size: 1, cached_at: None };
    for i in 0..100_000 {
        let tag = Tag::parse(&format!("t{i:06}")).unwrap();
        put(&t, &keys::tag_object(&name, &tag), PutOptions { custom: record.to_metadata(), ..PutOptions::default() });
    }
    let (first, deep) = assert_flat(&t, "/v2/big/tags/list?n=100", "/v2/big/tags/list?n=100&last=t099850");
    assert_eq!(first.json()["tags"][0], "seed");
    assert_eq!(deep.json()["tags"][0], "t099851");
    assert_eq!(deep.json()["tags"].as_array().unwrap().len(), 100);
    assert!(deep.header("Link").unwrap().contains("last=t099950"));
    // The UI reads each manifest shown once: one here, however deep the page.
    let (first, deep) = assert_flat_ui(&t, "/ui/repo/big", "/ui/repo/big?after=t099850");
    assert_eq!(first, deep);
}

/// The UI's pages cost the same at any depth (not a single operation: the manifests shown).
fn assert_flat_ui(t: &TestRegistry, first: &str, deep: &str) -> (Counts, Counts) {
    let (first_cost, _) = cost(t, first);
    let (deep_cost, page) = cost(t, deep);
    assert!(String::from_utf8_lossy(&page.body).contains("t099851"), "{deep}");
    (first_cost, deep_cost)
}

#[test]
fn the_catalog_costs_the_same_at_any_depth_of_10_000_repositories() {
    let t = TestRegistry::new();
    for i in 0..10_000 {
        put(&t, &keys::catalog_entry(&RepositoryName::parse(&format!("team/r{i:05}")).unwrap()), PutOptions::default());
    }
    let (first, deep) = assert_flat(&t, "/v2/_catalog?n=100", "/v2/_catalog?n=100&last=team/r09850");
    assert_eq!(first.json()["repositories"][0], "team/r00000");
    assert_eq!(deep.json()["repositories"][0], "team/r09851");
    assert_eq!(deep.json()["repositories"].as_array().unwrap().len(), 100);
}

#[test]
fn referrers_cost_the_same_on_every_page() {
    let t = TestRegistry::with_config(Config { max_page: 100, ..Config::default() });
    let (_, subject) = t.push_image("r", "v1", OCI_MANIFEST, "subject");
    let name = RepositoryName::parse("r").unwrap();
    for i in 0..5_000 {
        let referrer = Digest::sha256_of(format!("referrer {i}").as_bytes());
        let custom = [("mediaType", OCI_MANIFEST.to_owned()), ("size", "10".to_owned())].into_iter().collect();
        put(&t, &keys::referrer(&name, &subject, &referrer), PutOptions { custom, ..PutOptions::default() });
    }
    let mut path = format!("/v2/r/referrers/{subject}");
    let (first_cost, mut page) = cost(&t, &path);
    for _ in 0..40 {
        let link = page.header("Link").expect("more pages").to_owned();
        path = link[1..link.find('>').unwrap()].to_owned();
        let (page_cost, next) = cost(&t, &path);
        assert_eq!(page_cost, first_cost, "{path}");
        page = next;
    }
    assert_eq!(page.json()["manifests"].as_array().unwrap().len(), 100);
}

#[test]
fn copying_kv_tags_that_r2_holds_already_costs_listings_not_a_read_each() {
    use wharf::storage::KeyValueStore;
    let t = TestRegistry::new();
    let (_, digest) = t.push_image("big", "seed", OCI_MANIFEST, "one image");
    let name = RepositoryName::parse("big").unwrap();
    let record = TagRecord { digest: digest.to_string(), media_type: OCI_MANIFEST.into(), size: 1, cached_at: None };
    for i in 0..20_000 {
        let tag = Tag::parse(&format!("t{i:06}")).unwrap();
        put(&t, &keys::tag_object(&name, &tag), PutOptions { custom: record.to_metadata(), ..PutOptions::default() });
        block_on(t.kv.put(&keys::tag(&name, &tag), &record.digest, Some(&record.to_json()))).unwrap();
    }
    t.operations.take();
    let (done, copied) = block_on(t.registry.copy_kv_tags_to_r2()).unwrap();
    let run = t.operations.take();
    assert_eq!((done, copied), (false, 0));
    // Twenty KV listings of 200 keys, about as many R2 listings, where-it-stands read and written.
    assert_eq!((run.kv_reads, run.r2_writes), (20, 1), "{run:?}");
    assert!(run.r2_reads <= 22, "{run:?}");
    // 20,001 keys, 4,000 a run: five more runs.
    for _ in 0..4 {
        assert_eq!(block_on(t.registry.copy_kv_tags_to_r2()).unwrap(), (false, 0));
    }
    assert_eq!(block_on(t.registry.copy_kv_tags_to_r2()).unwrap(), (true, 0));
    assert!(block_on(t.registry.tags_in_r2()).unwrap());
}

#[test]
fn referrers_whose_annotations_are_in_their_manifests_are_paged_by_the_reads_they_cost() {
    use wharf::oci::referrers::MANIFEST_READS_PER_PAGE;
    let t = TestRegistry::new();
    let (_, subject) = t.push_image("r", "v1", OCI_MANIFEST, "subject");
    let config = t.push_blob("r", b"{}");
    // Signatures with 2 KiB of annotations each: too large to be kept beside the listing.
    let mut pushed = Vec::new();
    for i in 0..50 {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":1}},"annotations":{{"n":"{i}","pad":"{}"}}}}"#,
            "x".repeat(2048)
        );
        assert_eq!(
            t.put_manifest("r", &Digest::sha256_of(body.as_bytes()).to_string(), OCI_MANIFEST, body.as_bytes()).status,
            201
        );
        pushed.push(Digest::sha256_of(body.as_bytes()).to_string());
    }
    pushed.sort();
    let mut path = format!("/v2/r/referrers/{subject}");
    let mut seen = Vec::new();
    loop {
        let (page_cost, page) = cost(&t, &path);
        let manifests = page.json()["manifests"].as_array().unwrap().clone();
        assert!(manifests.len() <= MANIFEST_READS_PER_PAGE, "{}", manifests.len());
        // One listing, and a read of each manifest shown.
        assert_eq!(page_cost.r2_reads, 1 + manifests.len(), "{path}: {page_cost:?}");
        for m in &manifests {
            assert_eq!(m["annotations"]["pad"].as_str().map(str::len), Some(2048));
            seen.push(m["digest"].as_str().unwrap().to_owned());
        }
        let Some(link) = page.header("Link") else { break };
        path = link[1..link.find('>').unwrap()].to_owned();
    }
    assert_eq!(seen, pushed, "every referrer once, in order");
}

/// Pushes an image to `big` under `tags`, and returns its digest.
fn image_with_tags(t: &TestRegistry, seed: &str, tags: &[&str]) -> Digest {
    let body = t.image_manifest("big", OCI_MANIFEST, seed);
    for tag in tags {
        assert_eq!(t.put_manifest("big", tag, OCI_MANIFEST, &body).status, 201);
    }
    Digest::sha256_of(&body)
}

#[test]
fn a_delete_by_digest_costs_what_the_manifest_s_own_tags_cost_among_100_000() {
    let t = TestRegistry::with_config(Config { delete_enabled: true, ..Config::default() });
    let many = image_with_tags(&t, "tagged 100,000 times", &["seed"]);
    let few = image_with_tags(&t, "tagged three times", &["x1", "x2", "x3"]);
    let name = RepositoryName::parse("big").unwrap();
    let record = TagRecord { digest: many.to_string(), media_type: OCI_MANIFEST.into(), size: 1, cached_at: None };
    for i in 0..100_000 {
        let tag = Tag::parse(&format!("t{i:06}")).unwrap();
        put(&t, &keys::tag_object(&name, &tag), PutOptions { custom: record.to_metadata(), ..PutOptions::default() });
        put(&t, &keys::tagged(&name, &many, &tag), PutOptions::default());
    }
    // x2 moved to the other manifest since: its entry under `few` is left over.
    assert_eq!(
        t.put_manifest(
            "big",
            "x2",
            OCI_MANIFEST,
            &t.get(&format!("/v2/big/manifests/{many}"), &[("Accept", OCI_MANIFEST)]).body
        )
        .status,
        201
    );
    put(&t, &keys::tagged(&name, &few, &Tag::parse("x2").unwrap()), PutOptions::default());
    block_on(t.objects.put(keys::INDEXES_MIGRATION, b"done".to_vec(), PutOptions::default())).unwrap();
    // Past the time in which a push writes an entry and then its tag.
    t.wait(11 * 60);

    let cold = t.sharing_storage(t.registry.config.as_ref().clone());
    t.operations.take();
    assert_eq!(cold.delete(&format!("/v2/big/manifests/{few}")).status, 202);
    let cost = t.operations.take();
    // The manifest; whether the index is complete; one listing of its tags and a read of each
    // (three); the tags (KV, R2, index entry) and the left-over entry; the manifest, and
    // whether the repository still has one.
    let (reads, writes) = (cost.r2_reads + cost.kv_reads, cost.r2_writes + cost.kv_writes);
    assert_eq!((reads, writes), (1 + 1 + 1 + 3 + 1, 2 * 3 + 1 + 1), "{cost:?}");
    for tag in ["x1", "x3"] {
        assert_eq!(cold.get(&format!("/v2/big/manifests/{tag}"), &[("Accept", OCI_MANIFEST)]).status, 404, "{tag}");
    }
    assert_eq!(cold.get("/v2/big/manifests/x2", &[("Accept", OCI_MANIFEST)]).status, 200, "x2 names the other one");
    assert!(!t.objects.snapshot().keys().any(|k| k.contains(&format!("_tagged/sha256/{}", few.hex()))));
    assert_eq!(t.get("/v2/big/tags/list?n=1&last=t099998", &[]).json()["tags"], serde_json::json!(["t099999"]));
}

#[test]
fn tags_older_than_their_index_are_found_by_a_delete_until_the_collection_indexes_them() {
    let config = Config { delete_enabled: true, gc: wharf::config::GcMode::On, ..Config::default() };
    let t = TestRegistry::with_config(config);
    let old = image_with_tags(&t, "pushed before the index", &["a", "b"]);
    let older = image_with_tags(&t, "also before", &["c"]);
    // As a registry that predates the index holds them: the tags, without entries.
    let legacy: Vec<String> = t.objects.snapshot().into_keys().filter(|k| k.contains("/_tagged/")).collect();
    for key in &legacy {
        block_on(t.objects.delete(key)).unwrap();
    }
    assert_eq!(t.delete(&format!("/v2/big/manifests/{old}")).status, 202);
    for tag in ["a", "b"] {
        assert_eq!(t.get(&format!("/v2/big/manifests/{tag}"), &[]).status, 404, "{tag}: read from every tag");
    }
    block_on(t.registry.collect_garbage(t.now.get() * 1000, false)).unwrap();
    assert!(t.objects.snapshot().contains_key(&format!("repositories/big/_tagged/sha256/{}/c", older.hex())));
    t.operations.take();
    assert_eq!(t.delete(&format!("/v2/big/manifests/{older}")).status, 202);
    assert_eq!(t.get("/v2/big/manifests/c", &[]).status, 404);
    assert!(!t.objects.snapshot().keys().any(|k| k.contains("/_tags/")), "no tag left");
}
