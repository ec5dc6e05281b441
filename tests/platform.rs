//! Nothing acknowledged is lost on the platform as Cloudflare documents it, not only on the
//! simulator: two locations share R2 and KV, but each has its own KV cache (reads and lists
//! lag writes made elsewhere by up to a minute, misses included) and its own isolate memory;
//! KV and R2 take one write per second per key; each request has its budgets
//! (`wharf::storage::memory::Platform`).

mod common;

use common::*;
use futures_executor::block_on;
use futures_util::future::join;
use wharf::Config;
use wharf::base::http::{MemoryBody, Method};
use wharf::config::GcMode;
use wharf::storage::memory::{Faults, KV_CACHE_SECONDS};

/// Paid plan's default: room for anything a test does in one request.
const PAID: usize = 10_000;

fn config() -> Config {
    Config { delete_enabled: true, ..Config::default() }
}

fn collecting_untagged() -> Config {
    Config { gc: GcMode::On, gc_untagged: true, gc_grace_secs: 3600, ..config() }
}

/// Moves the clock, and the time the stores stamp on what is written, on by `seconds`.
fn wait(t: &TestRegistry, seconds: u64) {
    t.wait(seconds);
    t.objects.set_now_ms(t.now.get() * 1000);
}

fn manifest(t: &TestRegistry, repo: &str, reference: &str) -> TestResponse {
    t.get(&format!("/v2/{repo}/manifests/{reference}"), &[("Accept", ACCEPT_ALL)])
}

fn manifest_head(t: &TestRegistry, repo: &str, reference: &str) -> u16 {
    t.head(&format!("/v2/{repo}/manifests/{reference}"), &[("Accept", ACCEPT_ALL)]).status
}

/// Warms a location's KV cache the way a pull of a missing tag does: the miss is cached.
fn miss(t: &TestRegistry, repo: &str, tag: &str) {
    assert_eq!(manifest(t, repo, tag).status, 404, "{repo}:{tag} does not exist yet");
}

#[test]
fn a_tag_pulls_from_another_location_right_after_its_201() {
    let here = TestRegistry::on_platform(config(), PAID);
    let there = here.another_location();
    here.push_image("r", "v0", OCI_MANIFEST, "first");
    // `there` asks for the tag before it exists: its KV cache keeps the miss for a minute.
    miss(&there, "r", "v1");
    let (body, digest) = here.push_image("r", "v1", OCI_MANIFEST, "second");
    wait(&here, 1);
    let pulled = manifest(&there, "r", "v1");
    assert_eq!(pulled.status, 200, "{}", String::from_utf8_lossy(&pulled.body));
    assert_eq!(pulled.body, body);
    assert_eq!(pulled.header("Docker-Content-Digest"), Some(digest.to_string().as_str()));
    assert_eq!(manifest_head(&there, "r", "v1"), 200);
    // And it is listed there at once.
    let listed = there.get("/v2/r/tags/list", &[]).json();
    assert_eq!(listed["tags"], serde_json::json!(["v0", "v1"]));
}

#[test]
fn a_tag_moved_elsewhere_whose_old_manifest_is_gone_pulls_the_new_one() {
    let here = TestRegistry::on_platform(config(), PAID);
    let there = here.another_location();
    let (_, old) = here.push_image("r", "v1", OCI_MANIFEST, "old");
    // `there` reads the tag (a HEAD: its isolate keeps no manifest bytes), and its KV cache
    // keeps the old digest for a minute.
    assert_eq!(manifest_head(&there, "r", "v1"), 200);
    wait(&here, 3);
    let (new_body, _) = here.push_image("r", "v1", OCI_MANIFEST, "new");
    wait(&here, 1);
    assert_eq!(here.delete(&format!("/v2/r/manifests/{old}")).status, 202);
    wait(&here, 3);
    let pulled = manifest(&there, "r", "v1");
    assert_eq!(pulled.status, 200, "{}", String::from_utf8_lossy(&pulled.body));
    assert_eq!(pulled.body, new_body);
}

#[test]
fn after_a_delete_by_digest_no_location_keeps_a_tag_to_a_missing_manifest() {
    let here = TestRegistry::on_platform(config(), PAID);
    let there = here.another_location();
    let (body, digest) = here.push_image("r", "v1", OCI_MANIFEST, "x");
    // `here` lists the tags (its KV cache would keep that listing for a minute)...
    assert_eq!(here.get("/v2/r/tags/list", &[]).json()["tags"], serde_json::json!(["v1"]));
    wait(&here, 1);
    // ...then `there` tags the same manifest again, and `here` deletes it by digest.
    assert_eq!(there.put_manifest("r", "v2", OCI_MANIFEST, &body).status, 201);
    wait(&here, 1);
    assert_eq!(here.delete(&format!("/v2/r/manifests/{digest}")).status, 202);
    wait(&here, KV_CACHE_SECONDS + 1);
    for (location, t) in [("here", &here), ("there", &there)] {
        for tag in ["v1", "v2"] {
            assert_eq!(manifest_head(t, "r", tag), 404, "{location}: HEAD {tag}");
            assert_eq!(manifest(t, "r", tag).status, 404, "{location}: GET {tag}");
        }
        let listed = t.get("/v2/r/tags/list", &[]);
        assert_eq!(listed.status, 404, "{location}: the repository is gone: {:?}", listed.json());
    }
}

/// A manifest pushed long ago, then untagged: what untagged collection removes, unless a tag
/// names it again.
fn untagged_manifest(t: &TestRegistry) -> Vec<u8> {
    let (body, _) = t.push_image("r", "old", OCI_MANIFEST, "rollback target");
    wait(t, 1);
    assert_eq!(t.delete("/v2/r/manifests/old").status, 202);
    wait(t, 2 * 3600);
    body
}

#[test]
fn a_retag_elsewhere_keeps_the_manifest_from_untagged_collection() {
    let here = TestRegistry::on_platform(collecting_untagged(), PAID);
    let there = here.another_location();
    let body = untagged_manifest(&here);
    // A dry run first: it reads the tags as they are now.
    let dry = block_on(here.registry.collect_garbage(here.now.get() * 1000, true)).unwrap();
    assert_eq!(dry.manifests.len(), 1, "{dry:?}");
    // A rollback in the other location: the old manifest tagged again, no bytes written.
    assert_eq!(there.put_manifest("r", "stable", OCI_MANIFEST, &body).status, 201);
    wait(&here, 1);
    let report = block_on(here.registry.collect_garbage(here.now.get() * 1000, false)).unwrap();
    assert!(report.manifests.is_empty(), "{report:?}");
    wait(&here, KV_CACHE_SECONDS + 1);
    for t in [&here, &there] {
        let pulled = manifest(t, "r", "stable");
        assert_eq!(pulled.status, 200, "{}", String::from_utf8_lossy(&pulled.body));
        assert_eq!(pulled.body, body);
    }
}

#[test]
fn a_retag_racing_untagged_collection_at_every_step_keeps_the_manifest() {
    let mut raced = 0;
    for n in 1.. {
        let faults = Faults::new();
        let here = TestRegistry::on_platform_with_faults(collecting_untagged(), PAID, &faults);
        let there = here.another_location();
        let body = untagged_manifest(&here);
        let pause = faults.pause_at(n);
        let collection = async {
            let result = here.registry.collect_garbage(here.now.get() * 1000, false).await;
            pause.release();
            result
        };
        let retag = async {
            pause.reached().await;
            if !pause.was_reached() {
                return None;
            }
            let headers = [("Content-Type", OCI_MANIFEST)];
            let body = MemoryBody::from_bytes(body.clone());
            let put = there.respond("https://registry.test", Method::Put, "/v2/r/manifests/stable", &headers, body);
            let put = put.await;
            pause.release();
            Some(put)
        };
        let (collected, put) = block_on(join(collection, retag));
        let Some(put) = put else { break };
        collected.unwrap_or_else(|e| panic!("step {n}: {}", e.message()));
        raced += 1;
        if put.status != 201 {
            continue;
        }
        wait(&here, KV_CACHE_SECONDS + 1);
        let pulled = manifest(&there, "r", "stable");
        assert_eq!(pulled.status, 200, "step {n}: {}", String::from_utf8_lossy(&pulled.body));
        assert_eq!(pulled.body, body, "step {n}");
        // And a later collection keeps it.
        let report = block_on(here.registry.collect_garbage(here.now.get() * 1000, false)).unwrap();
        assert!(report.manifests.is_empty(), "step {n}: {report:?}");
    }
    assert!(raced > 3, "the collection paused at {raced} steps only");
}

#[test]
fn a_push_racing_the_delete_of_a_repository_s_last_manifest_keeps_it_in_the_catalog() {
    let mut raced = 0;
    for n in 1.. {
        let faults = Faults::new();
        let t = TestRegistry::on_platform_with_faults(config(), PAID, &faults);
        let other = t.another_location();
        let (_, first) = t.push_image("r", "v1", OCI_MANIFEST, "first");
        let next = other.image_manifest("r", OCI_MANIFEST, "second");
        wait(&t, 1);
        assert_eq!(t.get("/v2/_catalog", &[]).json()["repositories"], serde_json::json!(["r"]));
        let pause = faults.pause_at(n);
        let delete = async {
            let path = format!("/v2/r/manifests/{first}");
            let r = t.respond("https://registry.test", Method::Delete, &path, &[], MemoryBody::empty()).await;
            pause.release();
            r
        };
        let push = async {
            pause.reached().await;
            if !pause.was_reached() {
                return None;
            }
            let headers = [("Content-Type", OCI_MANIFEST)];
            let body = MemoryBody::from_bytes(next.clone());
            let put = other.respond("https://registry.test", Method::Put, "/v2/r/manifests/v2", &headers, body).await;
            pause.release();
            Some(put)
        };
        let (deleted, pushed) = block_on(join(delete, push));
        let Some(pushed) = pushed else { break };
        raced += 1;
        assert_eq!(deleted.status, 202, "step {n}: {}", String::from_utf8_lossy(&deleted.body));
        assert_eq!(pushed.status, 201, "step {n}: {}", String::from_utf8_lossy(&pushed.body));
        let catalog = t.get("/v2/_catalog", &[]).json();
        assert_eq!(catalog["repositories"], serde_json::json!(["r"]), "step {n}");
        assert_eq!(manifest(&t, "r", "v2").status, 200, "step {n}");
    }
    assert!(raced > 3, "the delete paused at {raced} steps only");
}

#[test]
fn a_second_write_to_a_tag_within_a_second_waits_and_lands() {
    let t = TestRegistry::on_platform(config(), PAID);
    let (_, first) = t.push_image("r", "latest", OCI_MANIFEST, "one");
    // The same second: R2 and KV refuse the tag's write once, and wharf writes it again.
    let (body, second) = t.push_image("r", "latest", OCI_MANIFEST, "two");
    assert_ne!(first, second);
    assert_eq!(manifest(&t, "r", "latest").body, body);
    assert_eq!(manifest(&t.another_location(), "r", "latest").body, body);
}

#[test]
fn a_write_refused_for_load_past_its_retries_is_answered_429_with_retry_after() {
    let mut t = TestRegistry::on_platform(config(), PAID);
    // Without a timer nothing is retried: the refusal reaches the client.
    t.registry.objects.sleep = None;
    t.registry.kv.sleep = None;
    let (first_body, _) = t.push_image("r", "latest", OCI_MANIFEST, "one");
    let second = t.image_manifest("r", OCI_MANIFEST, "two");
    let refused = t.put_manifest("r", "latest", OCI_MANIFEST, &second);
    assert_eq!(refused.status, 429, "{}", String::from_utf8_lossy(&refused.body));
    assert_eq!(refused.error_code(), "TOOMANYREQUESTS");
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert_eq!(manifest(&t, "r", "latest").body, first_body, "the tag did not move");
}
