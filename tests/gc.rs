//! Garbage collection over the in-memory backend: what goes and what stays, dry runs, the admin
//! endpoint, a collection stopped at every step, and pushes and mounts racing a collection at
//! every step (the protocol of `wharf::ops::gc`).

mod common;

use common::*;
use futures_executor::block_on;
use futures_util::future::{join, join3};
use std::future::Future;
use wharf::Config;
use wharf::base::http::{MemoryBody, Method};
use wharf::base::names::Digest;
use wharf::config::GcMode;
use wharf::ops::gc::{GcReport, LEASE_MS, Phase, STEP_BUDGET};
use wharf::storage::keys::parse_holder;
use wharf::storage::memory::{Fault, Faults, Pause};

const HOUR_MS: u64 = 3600 * 1000;
/// Every registry runs on the platform model (`wharf::storage::memory::Platform`) with the Paid
/// plan's default subrequests: a collection runs in one invocation.
const PAID: usize = 10_000;
/// When the fixtures are written; collections run hours later, past the grace period.
const PUSHED_MS: u64 = 1_800_000_000_000;

fn config() -> Config {
    Config { delete_enabled: true, gc: GcMode::On, gc_grace_secs: 3600, ..Config::default() }
}

fn untagged_config() -> Config {
    Config { gc_untagged: true, ..config() }
}

/// Moves both clocks (the registry's and the stores' write times) to `ms`.
fn at(t: &TestRegistry, ms: u64) {
    t.now.set(ms / 1000);
    t.objects.set_now_ms(ms);
}

/// The registry's content: storage without the collection's own records (its run, the
/// holders of blob bytes, the migrations' progress), which a dry run writes too.
fn content(t: &TestRegistry) -> common::Snapshot {
    let mut snapshot = t.snapshot();
    snapshot.objects.retain(|key, _| !["gc/", "holders/", "migrations/"].iter().any(|p| key.starts_with(p)));
    snapshot
}

/// Time enough for the lease of a step that died to run out: then the run goes on.
fn after_a_dead_step(t: &TestRegistry) {
    t.wait(LEASE_MS / 1000 + 1);
}

fn collect(t: &TestRegistry, dry_run: bool) -> GcReport {
    let now_ms = t.now.get() * 1000;
    block_on(t.registry.collect_garbage(now_ms, dry_run)).expect("collection")
}

/// The manifest pulls, and so does every blob it names, with the right bytes.
fn assert_pullable(t: &TestRegistry, repo: &str, reference: &str) {
    let r = t.get(&format!("/v2/{repo}/manifests/{reference}"), &[("Accept", ACCEPT_ALL)]);
    assert_eq!(r.status, 200, "{repo}:{reference}: {}", String::from_utf8_lossy(&r.body));
    let m = r.json();
    let blobs =
        m["config"].get("digest").into_iter().chain(m["layers"].as_array().into_iter().flatten().map(|l| &l["digest"]));
    for d in blobs {
        let d = d.as_str().unwrap();
        let b = t.get(&format!("/v2/{repo}/blobs/{d}"), &[]);
        assert_eq!(b.status, 200, "{repo}:{reference}: blob {d}");
        assert_eq!(Digest::sha256_of(&b.body).to_string(), d, "{repo}:{reference}: blob {d}");
    }
}

fn blob_status(t: &TestRegistry, repo: &str, d: &Digest) -> u16 {
    t.head(&format!("/v2/{repo}/blobs/{d}"), &[]).status
}

/// An image manifest over blobs already in the repository.
fn manifest_of(config: &Digest, config_size: usize, layers: &[(&Digest, usize)]) -> Vec<u8> {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, size)| {
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{size}}}"#)
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{}]}}"#,
        layers.join(",")
    )
    .into_bytes()
}

#[test]
fn unreferenced_blobs_go_after_the_grace_period_and_a_dry_run_changes_nothing() {
    let t = TestRegistry::on_platform(config(), PAID);
    at(&t, PUSHED_MS);
    t.push_image("app", "v1", OCI_MANIFEST, "one");
    let orphan = t.push_blob("app", b"uploaded, never referenced");
    at(&t, PUSHED_MS + HOUR_MS / 2);
    let recent = t.push_blob("app", b"uploaded, its manifest still to come");

    at(&t, PUSHED_MS + HOUR_MS + 1000);
    let before = content(&t);
    let dry = collect(&t, true);
    assert_eq!(content(&t), before, "a dry run deletes nothing");
    assert!(dry.dry_run);
    assert_eq!(dry.blob_links, [format!("app@{orphan}")]);
    assert_eq!(dry.index_entries, [orphan.to_string()]);
    assert_eq!(dry.blobs.len(), 1);
    assert_eq!(dry.bytes_freed, b"uploaded, never referenced".len() as u64);

    let report = collect(&t, false);
    assert_eq!(
        (report.blob_links, report.index_entries, report.bytes_freed),
        (dry.blob_links, dry.index_entries, dry.bytes_freed)
    );
    assert_eq!(blob_status(&t, "app", &orphan), 404);
    // Within the grace period: a push between its blobs and its manifest keeps its blobs.
    assert_eq!(blob_status(&t, "app", &recent), 200);
    assert_pullable(&t, "app", "v1");
    let mount = t.send(Method::Post, &format!("/v2/other/blobs/uploads/?mount={orphan}"), &[], MemoryBody::empty());
    assert_eq!(mount.status, 202, "the registry-wide index forgot the blob too");
    // Nothing left for a second run.
    let again = collect(&t, false);
    assert!(again.blob_links.is_empty() && again.blobs.is_empty() && again.index_entries.is_empty(), "{again:?}");
}

#[test]
fn a_deleted_image_frees_what_nothing_else_uses() {
    let t = TestRegistry::on_platform(config(), PAID);
    at(&t, PUSHED_MS);
    let (body, digest) = t.push_image("a", "v1", OCI_MANIFEST, "a");
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let config_a = Digest::parse(m["config"]["digest"].as_str().unwrap()).unwrap();
    let shared = Digest::parse(m["layers"][0]["digest"].as_str().unwrap()).unwrap();
    let only_a = Digest::parse(m["layers"][1]["digest"].as_str().unwrap()).unwrap();
    // Repository b uses one of a's layers (mounted: the same bytes) with its own config.
    let r = t.send(Method::Post, &format!("/v2/b/blobs/uploads/?mount={shared}&from=a"), &[], MemoryBody::empty());
    assert_eq!(r.status, 201);
    let config_b = t.push_blob("b", b"{\"config\":\"b\"}");
    let body_b = manifest_of(&config_b, 14, &[(&shared, "layer one of a".len())]);
    assert_eq!(t.put_manifest("b", "v1", OCI_MANIFEST, &body_b).status, 201);
    assert_eq!(t.delete(&format!("/v2/a/manifests/{digest}")).status, 202);

    at(&t, PUSHED_MS + 2 * HOUR_MS);
    let report = collect(&t, false);
    let mut links = report.blob_links.clone();
    links.sort();
    let mut expected = vec![format!("a@{config_a}"), format!("a@{shared}"), format!("a@{only_a}")];
    expected.sort();
    assert_eq!(links, expected);
    assert_eq!(report.blobs.len(), 2, "a's config and its own layer; the shared layer stays: {report:?}");
    for d in [&config_a, &shared, &only_a] {
        assert_eq!(blob_status(&t, "a", d), 404);
    }
    assert_pullable(&t, "b", "v1");
}

#[test]
fn untagged_manifests_go_only_when_asked_and_what_tags_reach_stays() {
    let build = |config: Config| {
        let t = TestRegistry::on_platform(config, PAID);
        at(&t, PUSHED_MS);
        let (_, tagged) = t.push_image("u", "v1", OCI_MANIFEST, "tagged");
        let (_, untagged) = t.push_image("u", "placeholder", OCI_MANIFEST, "untagged");
        // Untag it: pushed by digest, now reached by nothing.
        assert_eq!(t.delete("/v2/u/manifests/placeholder").status, 202);
        // A tagged index whose child has no tag of its own.
        let child_body = t.image_manifest("u", OCI_MANIFEST, "child");
        let child = Digest::sha256_of(&child_body);
        assert_eq!(t.put_manifest("u", &child.to_string(), OCI_MANIFEST, &child_body).status, 201);
        let index = list_body(OCI_INDEX, &[(&child, child_body.len(), OCI_MANIFEST, "amd64")]);
        assert_eq!(t.put_manifest("u", "multi", OCI_INDEX, &index).status, 201);
        // Signatures (untagged referrers) of the tagged image and of the untagged one.
        let empty = t.push_blob("u", b"{}");
        let signature = |subject: &Digest, seed: &str| {
            let layer = t.push_blob("u", seed.as_bytes());
            let body = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/example.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/example.sig","digest":"{layer}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":1}}}}"#,
                seed.len()
            );
            let d = Digest::sha256_of(body.as_bytes());
            assert_eq!(t.put_manifest("u", &d.to_string(), OCI_MANIFEST, body.as_bytes()).status, 201);
            (d, layer)
        };
        let (sig_tagged, _) = signature(&tagged, "signature of the tagged image");
        let (sig_untagged, sig_layer) = signature(&untagged, "signature of the untagged image");
        at(&t, PUSHED_MS + 2 * HOUR_MS);
        (t, tagged, untagged, child, sig_tagged, sig_untagged, sig_layer)
    };

    let (t, ..) = build(config());
    let report = collect(&t, false);
    assert!(report.manifests.is_empty() && report.blob_links.is_empty(), "{report:?}");

    let (t, tagged, untagged, child, sig_tagged, sig_untagged, sig_layer) = build(untagged_config());
    let report = collect(&t, false);
    let mut gone = report.manifests.clone();
    gone.sort();
    let mut expected = vec![format!("u@{untagged}"), format!("u@{sig_untagged}")];
    expected.sort();
    assert_eq!(gone, expected);
    for d in [&untagged, &sig_untagged] {
        assert_eq!(t.head(&format!("/v2/u/manifests/{d}"), &[("Accept", ACCEPT_ALL)]).status, 404);
    }
    assert_eq!(blob_status(&t, "u", &sig_layer), 404, "the removed signature's layer went with it");
    assert_eq!(blob_status(&t, "u", &Digest::sha256_of(b"{}")), 200, "the empty config is shared");
    for reference in ["v1", "multi", &child.to_string(), &sig_tagged.to_string()] {
        assert_pullable(&t, "u", reference);
    }
    let referrers = t.get(&format!("/v2/u/referrers/{untagged}"), &[]).json();
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 0);
    let referrers = t.get(&format!("/v2/u/referrers/{tagged}"), &[]).json();
    assert_eq!(referrers["manifests"][0]["digest"], sig_tagged.to_string());
}

#[test]
fn a_blob_a_client_deleted_stays_deleted_but_its_bytes_stay_while_referenced() {
    let t = TestRegistry::on_platform(config(), PAID);
    at(&t, PUSHED_MS);
    let (body, _) = t.push_image("r", "v1", OCI_MANIFEST, "x");
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layer = Digest::parse(m["layers"][0]["digest"].as_str().unwrap()).unwrap();
    assert_eq!(t.delete(&format!("/v2/r/blobs/{layer}")).status, 202);
    at(&t, PUSHED_MS + 2 * HOUR_MS);
    let report = collect(&t, false);
    assert!(report.repaired.is_empty() && report.blobs.is_empty(), "{report:?}");
    assert_eq!(blob_status(&t, "r", &layer), 404, "not linked again behind the client's back");
    let layer_bytes = b"layer one of x".to_vec();
    assert!(t.objects.snapshot().values().any(|v| *v == layer_bytes), "the bytes a manifest references stay");
}

#[test]
fn a_sweep_stopped_before_its_recheck_is_finished_by_the_next_run() {
    let old = Digest::sha256_of(b"old bytes, about to be used again");
    let mut repaired = 0;
    for n in 1.. {
        let faults = Faults::new();
        let (t, _) = old_orphan(&faults);
        let other = t.sharing_storage(config());
        let pause = faults.pause_at(n);
        let collection = async {
            let result = t.registry.collect_garbage(t.now.get() * 1000, false).await;
            pause.release();
            result
        };
        let racing = async {
            pause.reached().await;
            if !pause.was_reached() {
                return None;
            }
            let config = b"{\"config\":\"new\"}";
            let c = Digest::sha256_of(config);
            let path = format!("/v2/src/blobs/uploads/?digest={c}");
            assert_eq!(send_async(&other, Method::Post, &path, &[], config).await.status, 201);
            let body = manifest_of(&c, config.len(), &[(&old, 33)]);
            let headers = [("Content-Type", OCI_MANIFEST)];
            let put = send_async(&other, Method::Put, "/v2/src/manifests/v1", &headers, &body).await;
            // The collection runs one more operation, then stops as if the Worker died.
            faults.fail_at(2, Fault::Crash);
            pause.release();
            Some(put)
        };
        let (_, put) = block_on(join(collection, racing));
        let Some(put) = put else { break };
        faults.clear();
        let fresh = t.sharing_storage(config());
        after_a_dead_step(&fresh);
        let report = collect(&fresh, false);
        if put.status == 201 {
            assert_pullable(&fresh, "src", "v1");
            repaired += report.repaired.len();
        }
        assert!(!fresh.objects.snapshot().keys().any(|k| k.starts_with("gc/sweeps/")), "step {n}: a sweep record left");
    }
    assert!(repaired > 0, "no step left a link for the next run to put back");
}

#[test]
fn the_admin_endpoint_needs_its_token_and_deletes_only_when_collection_is_on() {
    let token = "a".repeat(40);
    let bearer = format!("Bearer {token}");
    let post = |t: &TestRegistry, path: &str, auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        t.send(Method::Post, path, &headers, MemoryBody::empty())
    };

    let without = TestRegistry::on_platform(config(), PAID);
    assert_eq!(post(&without, "/_wharf/gc", Some(&bearer)).status, 404, "no token configured, no endpoint");

    let off = TestRegistry::on_platform(Config { gc: GcMode::Off, admin_token: Some(token.clone()), ..config() }, PAID);
    at(&off, PUSHED_MS);
    let orphan = off.push_blob("r", b"orphan");
    at(&off, PUSHED_MS + 2 * HOUR_MS);
    for auth in [None, Some("Bearer wrong"), Some(token.as_str()), Some(&format!("Basic {token}"))] {
        let r = post(&off, "/_wharf/gc", auth);
        assert_eq!((r.status, r.error_code().as_str()), (401, "UNAUTHORIZED"), "{auth:?}");
    }
    let get =
        |t: &TestRegistry, path: &str| t.send(Method::Get, path, &[("Authorization", &bearer)], MemoryBody::empty());
    let r = get(&off, "/_wharf/gc");
    assert_eq!((r.status, r.error_code().as_str()), (404, "UNSUPPORTED"), "no run yet");
    let r = off.send(Method::Delete, "/_wharf/gc", &[("Authorization", &bearer)], MemoryBody::empty());
    assert_eq!((r.status, r.error_code().as_str()), (405, "UNSUPPORTED"));
    let before = content(&off);
    // Without a queue of steps, the run goes to its end within the request.
    let r = post(&off, "/_wharf/gc", Some(&bearer));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    let run = r.json();
    let id = run["id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("Location"), Some(format!("/_wharf/gc/{id}").as_str()));
    assert_eq!((run["dryRun"].as_bool(), run["phase"]["name"].as_str()), (Some(true), Some("done")));
    assert_eq!(run["report"]["dryRun"], true);
    assert_eq!(run["report"]["blobLinks"][0], format!("r@{orphan}"));
    assert!(run["steps"].as_u64().unwrap() >= 4 && run["maxStepOperations"].as_u64().unwrap() > 0, "{run}");
    // The run and its report stay readable, by id too.
    for path in ["/_wharf/gc".to_owned(), format!("/_wharf/gc/{id}")] {
        let r = get(&off, &path);
        assert_eq!(
            (r.status, r.json()["report"]["blobLinks"][0].clone()),
            (200, run["report"]["blobLinks"][0].clone())
        );
    }
    let r = get(&off, &format!("/_wharf/gc/{}", "0".repeat(32)));
    assert_eq!((r.status, r.error_code().as_str()), (404, "UNSUPPORTED"), "another run");
    let r = post(&off, "/_wharf/gc?dry-run=false", Some(&bearer));
    assert_eq!((r.status, r.error_code().as_str()), (405, "UNSUPPORTED"));
    assert_eq!(content(&off), before);

    let on = off.sharing_storage(Config { admin_token: Some(token.clone()), ..config() });
    let r = post(&on, "/_wharf/gc?dry-run=false", Some(&bearer));
    assert_eq!((r.status, r.json()["report"]["dryRun"].as_bool()), (200, Some(false)));
    assert_ne!(r.json()["id"].as_str(), Some(id.as_str()), "a new run");
    assert_eq!(blob_status(&on, "r", &orphan), 404);
}

/// Storage after a collection, as key sets; blob bytes by their digest, since every run of the
/// fixture uploads them under new keys.
fn keys_of(t: &TestRegistry) -> (Vec<String>, Vec<String>) {
    let objects = t.objects.snapshot().into_iter().map(|(key, bytes)| match parse_holder(&key) {
        _ if key.starts_with("blobs/") => format!("bytes of {}", Digest::sha256_of(&bytes)),
        Some((_, who)) => format!("{who:?} holding {}", t.objects.metadata(&key).unwrap().custom["digest"]),
        None => key,
    });
    let mut objects: Vec<String> = objects.collect();
    objects.sort();
    (objects, t.kv.snapshot().into_keys().collect())
}

/// Garbage of every kind: a deleted image, an orphan blob, an untagged manifest, a shared layer.
fn littered(faults: &Faults) -> TestRegistry {
    let t = TestRegistry::on_platform_with_faults(untagged_config(), PAID, faults);
    at(&t, PUSHED_MS);
    t.push_image("a", "keep", OCI_MANIFEST, "keep");
    let (_, gone) = t.push_image("a", "gone", OCI_MANIFEST, "gone");
    assert_eq!(t.delete(&format!("/v2/a/manifests/{gone}")).status, 202);
    t.push_image("a", "untag-me", OCI_MANIFEST, "untagged");
    assert_eq!(t.delete("/v2/a/manifests/untag-me").status, 202);
    t.push_blob("b", b"orphan");
    t.push_image("b", "keep", DOCKER_MANIFEST, "keep");
    at(&t, PUSHED_MS + 2 * HOUR_MS);
    t
}

#[test]
fn a_collection_stopped_at_any_step_leaves_every_image_whole_and_the_next_run_finishes() {
    let faults = Faults::new();
    let clean = littered(&faults);
    collect(&clean, false);
    let expected = keys_of(&clean);
    let mut n = 1;
    loop {
        let faults = Faults::new();
        let t = littered(&faults);
        faults.fail_at(n, Fault::Crash);
        let stopped = block_on(t.registry.collect_garbage(t.now.get() * 1000, false)).is_err();
        faults.clear();
        let fresh = t.sharing_storage(untagged_config());
        after_a_dead_step(&fresh);
        assert_pullable(&fresh, "a", "keep");
        assert_pullable(&fresh, "b", "keep");
        collect(&fresh, false);
        assert_eq!(keys_of(&t), expected, "stopped at operation {n}");
        if !stopped {
            break;
        }
        n += 1;
    }
    assert!(n > 20, "the collection took {n} operations: too few to be the whole protocol");
}

/// Runs a collection stopped before its `n`th storage operation; meanwhile `racer` (with its own
/// registry, as another isolate) runs up to its own `m`th operation; then the collection runs to
/// its end, then the racer. `None` once the collection no longer reaches `n`; the outcome says
/// whether the racer was split (it reached `m`).
fn race<T>(
    faults: &Faults,
    t: &TestRegistry,
    (n, m): (usize, usize),
    racer: impl AsyncFnOnce(&TestRegistry) -> T,
) -> Option<(GcReport, T, bool)> {
    let other = t.sharing_storage(t.registry.config.as_ref().clone());
    let (collection_paused, racer_paused, collection_done) = (Pause::default(), Pause::default(), Pause::default());
    faults.pause_with(n, &collection_paused);
    let collection = async {
        let report = t.registry.collect_garbage(t.now.get() * 1000, false).await.expect("collection");
        collection_paused.release();
        collection_done.release();
        report
    };
    let racing = async {
        collection_paused.reached().await;
        if !collection_paused.was_reached() {
            return None;
        }
        faults.pause_with(m, &racer_paused);
        let out = racer(&other).await;
        // Finished without reaching `m`: nothing to wait for.
        racer_paused.release();
        Some(out)
    };
    let conducting = async {
        collection_paused.reached().await;
        if !collection_paused.was_reached() {
            return;
        }
        racer_paused.reached().await;
        collection_paused.release();
        collection_done.reached().await;
        racer_paused.release();
    };
    let (report, out, ()) = block_on(join3(collection, racing, conducting));
    out.map(|out| (report, out, racer_paused.was_reached()))
}

/// Every interleaving of `racer` with a collection over `setup`'s storage that splits each at
/// one storage operation. `check` sees each outcome after the collection, and again after a
/// second one; the outcomes are returned.
fn at_every_step<T>(
    setup: impl Fn(&Faults) -> TestRegistry,
    racer: impl AsyncFn(&TestRegistry) -> T,
    check: impl Fn(&TestRegistry, &T, (usize, usize)),
) -> Vec<(GcReport, T)> {
    let mut outcomes = Vec::new();
    for n in 1.. {
        for m in 1.. {
            let faults = Faults::new();
            let t = setup(&faults);
            let Some((report, out, split)) = race(&faults, &t, (n, m), &racer) else { return outcomes };
            let fresh = t.sharing_storage(config());
            check(&fresh, &out, (n, m));
            collect(&fresh, false);
            check(&fresh, &out, (n, m));
            outcomes.push((report, out));
            if !split {
                break;
            }
        }
    }
    outcomes
}

fn send_async<'a>(
    t: &'a TestRegistry,
    method: Method,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: &[u8],
) -> impl Future<Output = TestResponse> + 'a {
    t.respond("https://registry.test", method, path, headers, MemoryBody::from_bytes(body.to_vec()))
}

/// A blob pushed long ago and referenced by nothing: what a collection removes.
fn old_orphan(faults: &Faults) -> (TestRegistry, Digest) {
    let t = TestRegistry::on_platform_with_faults(config(), PAID, faults);
    at(&t, PUSHED_MS);
    let d = t.push_blob("src", b"old bytes, about to be used again");
    at(&t, PUSHED_MS + 2 * HOUR_MS);
    (t, d)
}

#[test]
fn a_push_racing_a_collection_is_never_left_without_its_blobs() {
    let old = Digest::sha256_of(b"old bytes, about to be used again");
    let outcomes = at_every_step(
        |faults| old_orphan(faults).0,
        async |t| {
            // A client that saw the blob (HEAD) and now pushes a manifest using it.
            let config = b"{\"config\":\"new\"}";
            let c = Digest::sha256_of(config);
            let path = format!("/v2/src/blobs/uploads/?digest={c}");
            assert_eq!(send_async(t, Method::Post, &path, &[], config).await.status, 201);
            let body = manifest_of(&c, config.len(), &[(&old, 33)]);
            let headers = [("Content-Type", OCI_MANIFEST)];
            send_async(t, Method::Put, "/v2/src/manifests/v1", &headers, &body).await
        },
        |t, put, n| {
            if put.status == 201 {
                assert_pullable(t, "src", "v1");
            } else {
                assert_eq!((put.status, put.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"), "step {n:?}");
                assert_eq!(t.get("/v2/src/manifests/v1", &[("Accept", ACCEPT_ALL)]).status, 404, "step {n:?}");
            }
        },
    );
    // The race ran through each branch of the protocol: the push before the sweep, the push
    // whose blob the re-check put back, the push refused because the sweep came first.
    let restored = outcomes.iter().filter(|(r, put)| put.status == 201 && !r.restored.is_empty()).count();
    let accepted = outcomes.iter().filter(|(r, put)| put.status == 201 && r.restored.is_empty()).count();
    let refused = outcomes.iter().filter(|(_, put)| put.status != 201).count();
    assert!(accepted > 0 && refused > 0 && restored > 0, "accepted {accepted}, refused {refused}, restored {restored}");
}

#[test]
fn a_mount_racing_a_collection_either_links_bytes_that_stay_or_uploads() {
    for from in ["&from=src", ""] {
        let old = Digest::sha256_of(b"old bytes, about to be used again");
        let path = format!("/v2/dst/blobs/uploads/?mount={old}{from}");
        let outcomes = at_every_step(
            |faults| old_orphan(faults).0,
            async |t| send_async(t, Method::Post, &path, &[], b"").await,
            |t, mount, n| match mount.status {
                201 => {
                    let b = t.get(&format!("/v2/dst/blobs/{old}"), &[]);
                    assert_eq!(b.status, 200, "mount{from}, step {n:?}: a mounted blob lost its bytes");
                    assert_eq!(Digest::sha256_of(&b.body), old);
                }
                status => {
                    assert_eq!(status, 202, "mount{from}, step {n:?}");
                    assert_eq!(blob_status(t, "dst", &old), 404, "mount{from}, step {n:?}");
                }
            },
        );
        let mounted = outcomes.iter().filter(|(_, m)| m.status == 201).count();
        assert!(mounted > 0 && mounted < outcomes.len(), "mount{from}: {mounted} of {} mounted", outcomes.len());
    }
}

#[test]
fn an_upload_racing_a_collection_is_kept_except_between_the_last_check_and_the_delete() {
    let bytes = b"old bytes, about to be used again";
    let (mut acknowledged, mut lost) = (0, 0);
    for n in 1.. {
        let faults = Faults::new();
        let (t, d) = old_orphan(&faults);
        // Manifests to read: the collection's mark takes a few steps between listing and sweep.
        at(&t, PUSHED_MS);
        t.push_image("src", "v1", OCI_MANIFEST, "one");
        t.push_image("src", "v2", OCI_MANIFEST, "two");
        at(&t, PUSHED_MS + 2 * HOUR_MS);
        let path = format!("/v2/src/blobs/uploads/?digest={d}");
        let upload = async |t: &TestRegistry| send_async(t, Method::Post, &path, &[], bytes).await;
        // The upload runs whole at one point of the collection.
        let Some((_, r, _)) = race(&faults, &t, (n, usize::MAX), upload) else { break };
        assert_eq!(r.status, 201);
        acknowledged += 1;
        if blob_status(&t.sharing_storage(config()), "src", &d) != 200 {
            lost += 1;
        }
    }
    // R2 has no conditional delete: an upload that rewrites the link exactly between the
    // sweep's HEAD and its delete is the one window left (see `gc`).
    assert!(acknowledged >= 5 && lost <= 1, "{lost} of {acknowledged} acknowledged uploads lost");
}

/// Removes a tag's R2 object, leaving its KV copy: a tag pushed before R2 held tags.
fn kv_only(t: &TestRegistry, repo: &str, tag: &str) {
    use wharf::storage::ObjectStore;
    t.wait(1);
    block_on(t.objects.delete(&format!("repositories/{repo}/_tags/{tag}"))).unwrap();
}

#[test]
fn tags_kept_in_kv_alone_are_copied_to_r2_before_untagged_collection_runs() {
    let t = TestRegistry::on_platform(untagged_config(), PAID);
    at(&t, PUSHED_MS);
    t.push_image("r", "legacy", OCI_MANIFEST, "pushed before R2 held tags");
    kv_only(&t, "r", "legacy");
    // Enough KV-only tags that one run (5,000 KV keys) does not copy them all, written to KV as
    // a push before R2 held tags wrote them.
    let legacy = block_on(wharf::storage::KeyValueStore::get(&t.kv, "tags/r:legacy")).unwrap().unwrap();
    for i in 0..5000 {
        let key = format!("tags/r:t{i:04}");
        t.platform.as_ref().unwrap().begin_request();
        block_on(wharf::storage::KeyValueStore::put(&t.kv, &key, &legacy.value, legacy.metadata.as_ref())).unwrap();
    }
    t.wait(1);
    t.push_image("r", "gone", OCI_MANIFEST, "untagged for real");
    assert_eq!(t.delete("/v2/r/manifests/gone").status, 202);
    at(&t, PUSHED_MS + 4 * HOUR_MS);
    assert_eq!(t.get("/v2/r/tags/list", &[]).json()["tags"], serde_json::json!([]), "R2 lacks the tag");

    // Each run copies some thousands and removes no manifest as untagged until none is left.
    let first = collect(&t, false);
    assert!(first.untagged_deferred && first.manifests.is_empty(), "{first:?}");
    assert_eq!(t.get("/v2/r/tags/list?n=1", &[]).json()["tags"], serde_json::json!(["legacy"]));
    let mut runs = 1;
    let last = loop {
        runs += 1;
        // Each run an invocation of its own, as the cron's are.
        t.platform.as_ref().unwrap().begin_request();
        let report = collect(&t, false);
        if !report.untagged_deferred {
            break report;
        }
        assert!(report.manifests.is_empty(), "{report:?}");
    };
    // 5,002 KV keys, 200 a run (each two writes: the tag and its entry in the index of tags by
    // manifest).
    assert_eq!(runs, 26);
    // Then it collects what no tag names, and only that.
    assert_eq!(last.manifests.len(), 1, "{last:?}");
    assert_pullable(&t, "r", "legacy");
    assert_pullable(&t, "r", "t4999");
    assert_eq!(t.get("/v2/r/tags/list?n=1&last=t4998", &[]).json()["tags"], serde_json::json!(["t4999"]));
}

/// Runs the steps of a run up to and including the `n`th; `None` when the run ended before.
fn steps_up_to(t: &TestRegistry, n: usize) -> Option<String> {
    let (state, _) = block_on(t.registry.start_gc(t.now.get() * 1000, false)).expect("start");
    let mut state = state;
    for _ in 0..n {
        if state.done() {
            return None;
        }
        state = block_on(t.registry.gc_step(&state.id)).expect("step").expect("the run is free");
    }
    (!state.done()).then_some(state.id)
}

#[test]
fn a_push_between_any_two_steps_keeps_every_image_whole() {
    let old = Digest::sha256_of(b"old bytes, about to be used again");
    let mut boundaries = 0;
    for n in 1.. {
        let faults = Faults::new();
        let (t, _) = old_orphan(&faults);
        t.push_image("keep", "v1", OCI_MANIFEST, "kept all along");
        let Some(run) = steps_up_to(&t, n) else { break };
        boundaries += 1;
        // Between step n and n + 1, another isolate: a manifest over the old blob, a mount of it
        // from its repository, and one from the registry-wide index.
        let other = t.sharing_storage(config());
        let config_bytes = b"{\"config\":\"new\"}";
        let c = other.push_blob("src", config_bytes);
        let body = manifest_of(&c, config_bytes.len(), &[(&old, 33)]);
        let put = other.put_manifest("src", "v1", OCI_MANIFEST, &body);
        let mount =
            other.send(Method::Post, &format!("/v2/dst/blobs/uploads/?mount={old}&from=src"), &[], MemoryBody::empty());
        let indexed =
            other.send(Method::Post, &format!("/v2/any/blobs/uploads/?mount={old}"), &[], MemoryBody::empty());
        // The run goes on to its end, then another runs.
        while let Some(state) = block_on(t.registry.gc_step(&run)).expect("step") {
            if state.done() {
                break;
            }
        }
        collect(&t, false);
        assert_pullable(&t, "keep", "v1");
        if put.status == 201 {
            assert_pullable(&t, "src", "v1");
        } else {
            assert_eq!(put.error_code(), "MANIFEST_BLOB_UNKNOWN", "after step {n}");
        }
        for (mount, repo) in [(&mount, "dst"), (&indexed, "any")] {
            match mount.status {
                201 => assert_eq!(Digest::sha256_of(&t.get(&format!("/v2/{repo}/blobs/{old}"), &[]).body), old),
                status => assert_eq!((status, blob_status(&t, repo, &old)), (202, 404), "{repo}, after step {n}"),
            }
        }
    }
    assert!(boundaries >= 4, "{boundaries} step boundaries");
}

#[test]
fn a_run_goes_in_steps_each_within_its_budget() {
    let t = TestRegistry::on_platform(untagged_config(), PAID);
    at(&t, PUSHED_MS);
    for i in 0..120 {
        let repo = format!("r{i:03}");
        t.push_image(&repo, "v1", OCI_MANIFEST, &format!("image {i}"));
        t.push_image(&repo, "v2", OCI_MANIFEST, &format!("untagged {i}"));
        assert_eq!(t.delete(&format!("/v2/{repo}/manifests/v2")).status, 202);
    }
    for i in 0..1100 {
        t.push_blob("orphans", format!("orphan {i}").as_bytes());
    }
    at(&t, PUSHED_MS + 2 * HOUR_MS);
    let before: u64 =
        t.snapshot().objects.iter().filter(|(k, _)| k.starts_with("blobs/")).map(|(_, v)| v.len() as u64).sum();
    let mut phases = Vec::new();
    let state = steps_within_budget(&t, |state| phases.push(state.phase.name()));
    assert!(state.max_step_operations <= STEP_BUDGET, "{}", state.max_step_operations);
    let count = |name| phases.iter().filter(|p| **p == name).count();
    assert!(count("repositories") >= 2 && count("bytes") >= 2, "{phases:?}");
    // Each untagged image: its manifest, its three links, their bytes and index entries; and
    // every orphan. Lists stop at 1,000 items, the rest counted.
    let r = &state.report;
    assert_eq!(r.manifests.len(), 120);
    assert_eq!(r.blob_links.len() + r.blobs.len() + r.index_entries.len() + r.more as usize, 3 * (360 + 1100));
    let bytes_held = |t: &TestRegistry| -> u64 {
        t.snapshot().objects.iter().filter(|(k, _)| k.starts_with("blobs/")).map(|(_, v)| v.len() as u64).sum()
    };
    assert_eq!(r.bytes_freed, before - bytes_held(&t));
    for i in 0..120 {
        assert_pullable(&t, &format!("r{i:03}"), "v1");
    }
    assert!(!t.objects.snapshot().keys().any(|k| k.starts_with("repositories/orphans/")), "every orphan link went");
}

/// Steps a run to its end, each an invocation of its own within the step budget; between two
/// steps, `between` gets the state just written. Returns the last state.
fn steps_within_budget(
    t: &TestRegistry,
    mut between: impl FnMut(&wharf::ops::gc::RunState),
) -> wharf::ops::gc::RunState {
    let platform = t.platform.clone().unwrap();
    let (mut state, new) = block_on(t.registry.start_gc(t.now.get() * 1000, false)).unwrap();
    assert!(new);
    while !state.done() {
        platform.begin_request();
        state = block_on(t.registry.gc_step(&state.id)).unwrap().expect("the run is free");
        let used = platform.used();
        assert!(used.subrequests as u64 <= STEP_BUDGET && used.kv_operations <= 1000, "{used:?} {:?}", state.phase);
        between(&state);
    }
    state
}

/// Whether the run's next step goes on within repository `name`.
fn within(state: &wharf::ops::gc::RunState, name: &str) -> bool {
    matches!(&state.phase, Phase::Repositories { within: Some(n), .. } if n == name)
}

#[test]
fn a_repository_too_large_for_a_step_is_collected_over_several_each_within_its_budget() {
    let t = TestRegistry::on_platform(untagged_config(), PAID);
    at(&t, PUSHED_MS);
    // 1,000 images, every other one untagged: 500 manifests and 1,500 links to sweep, past
    // what one step reads and removes; and 3,000 more tags on the first image, past what one
    // step lists.
    let mut first = Vec::new();
    for i in 0..1000 {
        let (body, _) = t.push_image("big", &format!("t{i:04}"), OCI_MANIFEST, &format!("big {i}"));
        if i == 0 {
            first = body;
        }
        if i % 2 == 1 {
            assert_eq!(t.delete(&format!("/v2/big/manifests/t{i:04}")).status, 202);
        }
    }
    for j in 0..3000 {
        assert_eq!(t.put_manifest("big", &format!("x{j:04}"), OCI_MANIFEST, &first).status, 201);
    }
    t.push_image("small", "v1", OCI_MANIFEST, "small");
    t.push_image("small", "v2", OCI_MANIFEST, "small, untagged");
    assert_eq!(t.delete("/v2/small/manifests/v2").status, 202);
    at(&t, PUSHED_MS + 2 * HOUR_MS);

    let mut steps_within = 0;
    let state = steps_within_budget(&t, |state| steps_within += within(state, "big") as usize);
    assert!(steps_within >= 3, "{steps_within} steps went on within the large repository");
    assert!(state.max_step_operations <= STEP_BUDGET, "{}", state.max_step_operations);
    let r = &state.report;
    assert_eq!(r.manifests.len(), 501, "{:?}", r.manifests.len());
    assert!(r.manifests.iter().all(|m| m.starts_with("big@") || m.starts_with("small@")));
    assert!(r.restored.is_empty() && r.skipped.is_empty(), "{r:?}");
    for i in (0..1000).step_by(2) {
        assert_pullable(&t, "big", &format!("t{i:04}"));
    }
    assert_pullable(&t, "small", "v1");
    let tags = t.objects.snapshot().keys().filter(|k| k.starts_with("repositories/big/_tags/")).count();
    assert_eq!(tags, 500 + 3000);
    // What the run saved of the large repository went with it.
    assert!(!t.objects.snapshot().contains_key("gc/repository"));
    // Nothing is left to collect.
    let again = collect(&t, false);
    assert!(again.manifests.is_empty() && again.blob_links.is_empty() && again.blobs.is_empty(), "{again:?}");
}

#[test]
fn pushes_between_the_steps_of_a_large_repository_keep_every_image_whole() {
    let t = TestRegistry::on_platform(untagged_config(), PAID);
    at(&t, PUSHED_MS);
    let mut untagged = Vec::new();
    for i in 0..600 {
        let (body, _) = t.push_image("big", &format!("t{i:04}"), OCI_MANIFEST, &format!("big {i}"));
        if i % 2 == 1 {
            assert_eq!(t.delete(&format!("/v2/big/manifests/t{i:04}")).status, 202);
            untagged.push(body);
        }
    }
    at(&t, PUSHED_MS + 2 * HOUR_MS);
    // Between every two steps, another isolate tags an untagged image again, or pushes a new
    // manifest over an untagged image's blobs: whatever the step before took of them.
    let other = t.sharing_storage(untagged_config());
    let mut pushed = Vec::new();
    let mut steps_within = 0;
    let state = steps_within_budget(&t, |state| {
        steps_within += within(state, "big") as usize;
        let n = pushed.len();
        let Some(body) = untagged.get(n * 7) else { return };
        let tag = format!("again{n}");
        let put = match n % 2 {
            0 => other.put_manifest("big", &tag, OCI_MANIFEST, body),
            _ => {
                let fresh = String::from_utf8(body.clone())
                    .unwrap()
                    .replace("\"schemaVersion\":2", "\"schemaVersion\":2,\"annotations\":{\"n\":\"x\"}");
                other.put_manifest("big", &tag, OCI_MANIFEST, fresh.as_bytes())
            }
        };
        let code = if put.status == 201 { String::new() } else { put.error_code() };
        pushed.push((tag, put.status, code));
    });
    assert!(steps_within >= 2, "{steps_within} steps went on within the large repository");
    assert!(pushed.len() >= 3, "{pushed:?}");
    // Another run, then each push that was acknowledged pulls whole; the others were refused.
    collect(&t, false);
    for (tag, status, code) in &pushed {
        match status {
            201 => assert_pullable(&t, "big", tag),
            _ => assert_eq!(code, "MANIFEST_BLOB_UNKNOWN", "{tag}"),
        }
    }
    assert!(pushed.iter().any(|(_, status, _)| *status == 201), "{pushed:?}");
    for i in (0..600).step_by(2) {
        assert_pullable(&t, "big", &format!("t{i:04}"));
    }
    assert!(!state.report.manifests.is_empty());
}
