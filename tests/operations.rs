//! Operating wharf: immutable tags, structured request logs, notifications and the web UI, over
//! the in-memory backend.

mod common;

use common::*;
use futures_util::future::LocalBoxFuture;
use std::cell::RefCell;
use std::rc::Rc;
use wharf::Config;
use wharf::base::http::{MemoryBody, Method};
use wharf::config::notify::NotifyConfig;
use wharf::config::tags::ImmutableTags;
use wharf::ops::notify::Outcome;
use wharf::registry::host::{Delivery, Notifier};

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
fn captured_logs(level: wharf::base::log::Level) -> std::rc::Rc<std::cell::RefCell<Vec<String>>> {
    let lines = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let sink = lines.clone();
    wharf::base::log::set_sink(move |line| sink.borrow_mut().push(line.to_owned()));
    wharf::base::log::set_level(level);
    lines
}

#[test]
fn every_request_logs_one_json_line_without_secrets() {
    let lines = captured_logs(wharf::base::log::Level::Info);
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

    wharf::base::log::set_level(wharf::base::log::Level::Debug);
    t.get("/v2/", &[("User-Agent", "skopeo/1.13")]);
    let last: serde_json::Value = serde_json::from_str(lines.borrow().last().unwrap()).unwrap();
    assert_eq!(last["userAgent"], "skopeo/1.13");

    wharf::base::log::set_level(wharf::base::log::Level::Off);
    lines.borrow_mut().clear();
    t.get("/v2/", &[]);
    assert!(lines.borrow().is_empty());
}

/// A POST: URL, headers, body.
type Post = (String, Vec<(&'static str, String)>, Vec<u8>);

/// Records what would be POSTed; each URL fails its first `failures` attempts. With a `queue`,
/// deliveries are queued there (or refused, while `queue_refuses`).
#[derive(Clone, Default)]
struct FakeNotifier {
    posts: Rc<RefCell<Vec<Post>>>,
    sleeps: Rc<RefCell<Vec<u64>>>,
    failures: Rc<RefCell<std::collections::HashMap<String, usize>>>,
    queue: Option<Rc<RefCell<Vec<Delivery>>>>,
    queue_refuses: Rc<std::cell::Cell<bool>>,
}

impl Notifier for FakeNotifier {
    fn post(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> LocalBoxFuture<'_, Result<u16, String>> {
        self.posts.borrow_mut().push((url.to_owned(), headers, body));
        let result = match self.failures.borrow_mut().get_mut(url) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n % 2 == 0 { Ok(503) } else { Err("connection refused".to_owned()) }
            }
            _ => Ok(200),
        };
        Box::pin(async move { result })
    }
    fn sleep(&self, ms: u64) -> LocalBoxFuture<'_, ()> {
        self.sleeps.borrow_mut().push(ms);
        Box::pin(async {})
    }
    fn enqueue(&self, deliveries: Vec<Delivery>) -> Option<LocalBoxFuture<'_, Result<(), String>>> {
        let queue = self.queue.as_ref()?;
        let result = match self.queue_refuses.get() {
            true => Err("queue unavailable".to_owned()),
            false => {
                queue.borrow_mut().extend(deliveries);
                Ok(())
            }
        };
        Some(Box::pin(async move { result }))
    }
}

const HOOK: &str = "https://hooks.test/registry";
const FLAKY: &str = "https://flaky.test/registry";

fn notifying(events: &str) -> (TestRegistry, FakeNotifier) {
    notifying_through(events, FakeNotifier::default())
}

fn notifying_through(events: &str, notifier: FakeNotifier) -> (TestRegistry, FakeNotifier) {
    let var = |name: &str| match name {
        "WHARF_NOTIFY_URLS" => Some(format!("{HOOK}, {FLAKY}")),
        "WHARF_NOTIFY_SECRET" => Some("s3cret".to_owned()),
        "WHARF_NOTIFY_EVENTS" => Some(events.to_owned()),
        _ => None,
    };
    let notify = NotifyConfig::from_vars(&var).unwrap();
    let config = Config { delete_enabled: true, notify, ..Config::default() };
    (TestRegistry::with_notifier(config, Box::new(notifier.clone())), notifier)
}

/// The events POSTed to `url` since the last call, as JSON.
fn delivered(n: &FakeNotifier, url: &str) -> Vec<serde_json::Value> {
    let posts = std::mem::take(&mut *n.posts.borrow_mut());
    let (mine, others): (Vec<_>, Vec<_>) = posts.into_iter().partition(|(u, _, _)| u == url);
    n.posts.borrow_mut().extend(others);
    mine.iter()
        .flat_map(|(_, _, body)| {
            serde_json::from_slice::<serde_json::Value>(body).unwrap()["events"].as_array().unwrap().clone()
        })
        .collect()
}

#[test]
fn pushes_and_deletes_are_notified_signed_in_distributions_envelope() {
    let (t, n) = notifying("push,delete");
    let (_, digest) = t.push_image("team/app", "v1", OCI_MANIFEST, "x");
    let posts = n.posts.borrow().clone();
    assert_eq!(posts.len(), 2, "one envelope per endpoint: blob uploads are not notified");
    for (_, headers, body) in &posts {
        let header = |name: &str| headers.iter().find(|(h, _)| *h == name).map(|(_, v)| v.clone());
        assert_eq!(header("Content-Type").as_deref(), Some(wharf::ops::notify::EVENTS_MEDIA_TYPE));
        assert_eq!(header(wharf::ops::notify::SIGNATURE_HEADER), Some(wharf::ops::notify::signature("s3cret", body)));
    }
    let events = delivered(&n, HOOK);
    let e = &events[0];
    assert_eq!(e["action"], "push");
    assert_eq!(e["target"]["repository"], "team/app");
    assert_eq!(e["target"]["tag"], "v1");
    assert_eq!(e["target"]["digest"], digest.to_string());
    assert_eq!(e["target"]["mediaType"], OCI_MANIFEST);
    assert_eq!(e["target"]["url"], format!("https://registry.test/v2/team/app/manifests/{digest}"));
    assert_eq!(e["request"]["method"], "PUT");
    assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
    n.posts.borrow_mut().clear();

    // Pulls are not asked for here; deletes are.
    t.get("/v2/team/app/manifests/v1", &[("Accept", ACCEPT_ALL)]);
    assert!(n.posts.borrow().is_empty());
    let r = t.delete("/v2/team/app/manifests/v1");
    let e = &delivered(&n, HOOK)[0];
    assert_eq!((e["action"].as_str(), e["target"]["tag"].as_str()), (Some("delete"), Some("v1")));
    assert_eq!(e["request"]["id"].as_str().map(|id| id.starts_with(r.header("X-Request-Id").unwrap())), Some(true));
    t.delete(&format!("/v2/team/app/manifests/{digest}"));
    let e = &delivered(&n, HOOK)[0];
    assert_eq!(
        (e["action"].as_str(), e["target"]["digest"].as_str()),
        (Some("delete"), Some(digest.to_string().as_str()))
    );
    // A refused request notifies nothing.
    n.posts.borrow_mut().clear();
    t.delete(&format!("/v2/team/app/manifests/{digest}"));
    assert!(n.posts.borrow().is_empty());
}

#[test]
fn a_failing_endpoint_is_retried_a_bounded_number_of_times_and_never_fails_the_push() {
    let (t, n) = notifying("push");
    // Fails twice (an error, then a 503), then takes it.
    n.failures.borrow_mut().insert(FLAKY.to_owned(), 2);
    t.push_image("app", "v1", OCI_MANIFEST, "x");
    assert_eq!(delivered(&n, FLAKY).len(), 3, "two failures, then delivered");
    assert_eq!(*n.sleeps.borrow(), [500, 2000]);
    assert_eq!(delivered(&n, HOOK).len(), 1, "the other endpoint got it once");
    // Down for good: three tries, then given up; the push is still acknowledged.
    n.failures.borrow_mut().insert(FLAKY.to_owned(), 100);
    let body = t.image_manifest("app", OCI_MANIFEST, "y");
    assert_eq!(t.put_manifest("app", "v2", OCI_MANIFEST, &body).status, 201);
    assert_eq!(delivered(&n, FLAKY).len(), 3);
}

#[test]
fn pulls_are_notified_when_asked_for() {
    let (t, n) = notifying("pull");
    let (_, digest) = t.push_image("app", "v1", OCI_MANIFEST, "x");
    assert!(n.posts.borrow().is_empty(), "pushes are not asked for");
    t.head("/v2/app/manifests/v1", &[("Accept", ACCEPT_ALL)]);
    assert!(n.posts.borrow().is_empty(), "a HEAD is not a pull");
    t.get("/v2/app/manifests/v1", &[("Accept", ACCEPT_ALL)]);
    let e = &delivered(&n, HOOK)[0];
    assert_eq!((e["action"].as_str(), e["target"]["tag"].as_str()), (Some("pull"), Some("v1")));
    assert_eq!(e["target"]["digest"], digest.to_string());
}

fn ui_registry(auth: Option<wharf::auth::AuthConfig>) -> TestRegistry {
    TestRegistry::with_config(Config { ui: true, auth, delete_enabled: true, ..Config::default() })
}

fn html(t: &TestRegistry, path: &str, headers: &[(&str, &str)]) -> String {
    let r = t.get(path, headers);
    assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    let policy = r.header("Content-Security-Policy").unwrap();
    assert!(policy.starts_with("default-src 'none'"), "{policy}");
    // No page may be framed by another site (clickjacking).
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    String::from_utf8(r.body).unwrap()
}

#[test]
fn the_ui_is_off_unless_configured() {
    let t = TestRegistry::new();
    assert_eq!(t.get("/ui/", &[]).status, 404);
    assert_eq!(t.get("/", &[]).status, 404);
}

#[test]
fn the_ui_shows_repositories_tags_manifests_and_referrers_escaped() {
    let t = ui_registry(None);
    let (image, digest) = t.push_image("team/app", "v1", OCI_MANIFEST, "x");
    t.push_image("other", "latest", OCI_MANIFEST, "y");
    let index = list_body(OCI_INDEX, &[(&digest, image.len(), OCI_MANIFEST, "arm64")]);
    assert_eq!(t.put_manifest("team/app", "multi", OCI_INDEX, &index).status, 201);
    let index_digest = wharf::base::names::Digest::sha256_of(&index);
    // A signature whose artifact type tries to inject markup.
    let empty = t.push_blob("team/app", b"{}");
    let evil = "<script>alert(1)</script>";
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{evil}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{}}}}}"#,
        image.len()
    );
    let sig_digest = wharf::base::names::Digest::sha256_of(sig.as_bytes());
    assert_eq!(t.put_manifest("team/app", &sig_digest.to_string(), OCI_MANIFEST, sig.as_bytes()).status, 201);

    assert_eq!(t.get("/", &[]).header("Location"), Some("/ui/"));
    // Nobody to log in as without access control.
    assert_eq!(t.get("/ui/login", &[]).header("Location"), Some("/ui/"));
    let home = html(&t, "/ui/", &[]);
    assert!(home.contains("href=\"/ui/repo/team/app\"") && home.contains("href=\"/ui/repo/other\""));
    let found = html(&t, "/ui/?q=team", &[]);
    assert!(found.contains("/ui/repo/team/app") && !found.contains("/ui/repo/other"));

    let repo = html(&t, "/ui/repo/team/app", &[]);
    for expected in [
        "<b>v1</b>",
        "<b>multi</b>",
        "docker pull registry.test/team/app:v1",
        &format!("/ui/repo/team/app/manifest/{digest}"),
        "linux/amd64",
        "linux/arm64",
        "image",
        "index",
        " UTC",
    ] {
        assert!(repo.contains(expected), "repository page lacks {expected}");
    }

    let detail = html(&t, &format!("/ui/repo/team/app/manifest/{digest}"), &[]);
    let m: serde_json::Value = serde_json::from_slice(&image).unwrap();
    for layer in m["layers"].as_array().unwrap() {
        assert!(detail.contains(layer["digest"].as_str().unwrap()), "layer listed");
    }
    assert!(detail.contains(&format!("docker pull registry.test/team/app@{digest}")));
    assert!(detail.contains(&sig_digest.to_string()), "the signature is listed as a referrer");
    assert!(detail.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !detail.contains(evil));
    let index_page = html(&t, &format!("/ui/repo/team/app/manifest/{index_digest}"), &[]);
    assert!(index_page.contains("linux/arm64") && index_page.contains(&digest.to_string()));

    let missing = t.get("/ui/repo/nothing-here", &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("Content-Type"), Some("text/html; charset=utf-8"), "errors are pages too");
    assert_eq!(
        t.get(&format!("/ui/repo/team/app/manifest/{}", wharf::base::names::Digest::sha256_of(b"no")), &[]).status,
        404
    );
    assert_eq!(t.send(Method::Post, "/ui/", &[], MemoryBody::empty()).status, 405);
}

#[test]
fn the_ui_follows_the_access_rules_and_asks_browsers_to_log_in() {
    let users = format!(r#"{{"alice":"{}"}}"#, wharf::auth::secret::PasswordHash::new("alice-pw", b"salt", 10));
    let rules = r#"[{"repositories":"public/*","anonymous":["pull"],"users":{"alice":["push"]}},{"repositories":"team/*","users":{"alice":["pull","push"]}}]"#;
    let vars = [("WHARF_RULES", rules.to_owned()), ("WHARF_USERS", users), ("WHARF_TOKEN_SECRET", "s".repeat(40))];
    let auth =
        wharf::auth::AuthConfig::from_vars(&|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())).unwrap();
    let t = ui_registry(auth);
    let alice = format!(
        "Basic {}",
        base64::engine::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:alice-pw")
    );
    let as_alice = [("Authorization", alice.as_str())];
    // Pushed through an open registry over the same storage.
    let open = t.sharing_storage(Config::default());
    for repo in ["public/base", "team/secret"] {
        open.push_image(repo, "v1", OCI_MANIFEST, repo);
    }
    let anonymous = html(&t, "/ui/", &[]);
    assert!(anonymous.contains("public/base") && !anonymous.contains("team/secret"));
    assert!(anonymous.contains("/ui/login"));
    let r = t.get("/ui/repo/team/secret", &[]);
    assert_eq!(r.status, 401);
    assert!(r.header("WWW-Authenticate").unwrap().starts_with("Basic "));
    assert_eq!(t.get("/ui/login", &[]).status, 401);
    assert_eq!(t.get("/ui/login", &as_alice).header("Location"), Some("/ui/"));
    let home = html(&t, "/ui/", &as_alice);
    assert!(home.contains("team/secret") && home.contains("alice"));
    assert!(html(&t, "/ui/repo/team/secret", &as_alice).contains("<b>v1</b>"));
    let wrong =
        format!("Basic {}", base64::engine::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:nope"));
    assert_eq!(t.get("/ui/", &[("Authorization", &wrong)]).status, 401);
}

#[test]
fn the_ui_pages_tags_so_a_page_stays_within_the_free_plans_subrequests() {
    let t = ui_registry(None);
    let (body, _) = t.push_image("many", "t00", OCI_MANIFEST, "x");
    for i in 1..23 {
        assert_eq!(t.put_manifest("many", &format!("t{i:02}"), OCI_MANIFEST, &body).status, 201);
    }
    let before = t.objects.operations();
    let first = html(&t, "/ui/repo/many", &[]);
    assert!(t.objects.operations() - before < 50, "{} storage reads for one page", t.objects.operations() - before);
    assert!(first.contains("<b>t11</b>") && !first.contains("<b>t12</b>"));
    assert!(first.contains("href=\"/ui/repo/many?after=t11\""));
    let second = html(&t, "/ui/repo/many?after=t11", &[]);
    assert!(second.contains("<b>t12</b>") && second.contains("<b>t22</b>") && !second.contains("<b>t11</b>"));
    assert!(!second.contains("?after="), "the last page has no next link");
}

#[test]
fn with_a_queue_each_endpoint_gets_a_delivery_that_is_retried_until_it_lands() {
    let queue = Rc::new(RefCell::new(Vec::new()));
    let (t, n) = notifying_through("push", FakeNotifier { queue: Some(queue.clone()), ..FakeNotifier::default() });
    t.push_image("team/app", "v1", OCI_MANIFEST, "x");
    assert!(n.posts.borrow().is_empty(), "nothing is sent from the request itself");
    let deliveries = queue.borrow().clone();
    let endpoints: Vec<&str> = deliveries.iter().map(|d| d.endpoint.as_str()).collect();
    assert_eq!(endpoints, [HOOK, FLAKY]);

    // The consumer: an endpoint down for an hour gets the delivery once it is back.
    let flaky = &deliveries[1];
    n.failures.borrow_mut().insert(FLAKY.to_owned(), 9);
    let mut age = 0;
    let mut waits = Vec::new();
    loop {
        match futures_executor::block_on(t.registry.deliver_queued(flaky, age)) {
            Outcome::Delivered => break,
            Outcome::RetryAfter(wait) => {
                waits.push(wait);
                age += u64::from(wait);
            }
        }
    }
    // Each wait as long as the delivery is old, from 30 s up to 15 minutes.
    assert_eq!(waits, [30, 30, 60, 120, 240, 480, 900, 900, 900]);
    assert!(age >= 3600, "{age} s");
    let posts = n.posts.borrow();
    let (url, headers, body) = posts.last().unwrap();
    assert_eq!(url, FLAKY);
    assert_eq!(body, flaky.envelope.as_bytes());
    let signed = headers.iter().find(|(h, _)| *h == wharf::ops::notify::SIGNATURE_HEADER).map(|(_, v)| v.clone());
    assert_eq!(signed, Some(wharf::ops::notify::signature("s3cret", body)));
}

#[test]
fn a_queue_that_refuses_the_deliveries_leaves_them_to_be_sent_at_once() {
    let notifier = FakeNotifier { queue: Some(Rc::default()), ..FakeNotifier::default() };
    notifier.queue_refuses.set(true);
    let (t, n) = notifying_through("push", notifier);
    t.push_image("team/app", "v1", OCI_MANIFEST, "x");
    assert_eq!(delivered(&n, HOOK).len(), 1);
    assert_eq!(delivered(&n, FLAKY).len(), 1);
}

/// A registry that collects garbage with `rules` as `WHARF_RETENTION` (untagged collection off,
/// an hour of grace), immutable `ci/*:pr-1`, notifying tag deletes to HOOK.
fn retaining(rules: &str) -> (TestRegistry, FakeNotifier) {
    let var = |name: &str| match name {
        "WHARF_NOTIFY_URLS" => Some(HOOK.to_owned()),
        "WHARF_NOTIFY_EVENTS" => Some("delete".to_owned()),
        _ => None,
    };
    let config = Config {
        delete_enabled: true,
        gc: wharf::config::GcMode::On,
        gc_grace_secs: 3600,
        retention: wharf::config::retention::Retention::parse(rules).unwrap(),
        immutable_tags: ImmutableTags::parse("ci/*:pr-1").unwrap(),
        notify: NotifyConfig::from_vars(&var).unwrap(),
        ..Config::default()
    };
    let notifier = FakeNotifier::default();
    (TestRegistry::with_notifier(config, Box::new(notifier.clone())), notifier)
}

/// Moves both clocks (the registry's and the stores' write times) to `ms`.
fn at(t: &TestRegistry, ms: u64) {
    t.now.set(ms / 1000);
    t.objects.set_now_ms(ms);
}

const PUSHED_MS: u64 = 1_800_000_000_000;
const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

fn status_of(t: &TestRegistry, repo: &str, tag: &str) -> u16 {
    t.get(&format!("/v2/{repo}/manifests/{tag}"), &[("Accept", OCI_MANIFEST)]).status
}

#[test]
fn retention_keeps_the_newest_matching_tags_and_collects_what_the_others_held_in_the_same_run() {
    let (t, notifier) = retaining(r#"[{"repositories": "ci/*", "tags": "pr-*", "keepLast": 2}]"#);
    let mut digests = Vec::new();
    for (i, tag) in ["pr-1", "pr-2", "pr-3", "pr-4", "pr-5", "main"].iter().enumerate() {
        at(&t, PUSHED_MS + i as u64 * MINUTE_MS);
        digests.push(t.push_image("ci/app", tag, OCI_MANIFEST, &format!("build {tag}")).1);
    }
    // Another repository, and a second tag on pr-3's manifest that no rule matches.
    t.push_image("prod/app", "pr-2", OCI_MANIFEST, "elsewhere");
    assert_eq!(
        t.put_manifest(
            "ci/app",
            "keep-3",
            OCI_MANIFEST,
            &t.get("/v2/ci/app/manifests/pr-3", &[("Accept", OCI_MANIFEST)]).body
        )
        .status,
        201
    );
    at(&t, PUSHED_MS + 2 * 60 * MINUTE_MS);

    let dry = block_on_gc(&t, true);
    assert_eq!(dry.untagged, ["ci/app:pr-2", "ci/app:pr-3"], "pr-1 is immutable; pr-4 and pr-5 are the newest two");
    assert_eq!(dry.manifests, [format!("ci/app@{}", digests[1])], "pr-3's manifest is still tagged keep-3");
    assert_eq!(status_of(&t, "ci/app", "pr-2"), 200, "a dry run removes nothing");
    assert!(delivered(&notifier, HOOK).is_empty());

    let report = block_on_gc(&t, false);
    assert_eq!((report.untagged, report.manifests), (dry.untagged, dry.manifests));
    // The freed manifest's config and layers go with it, in the same run.
    assert_eq!(report.blob_links.len(), 3, "{:?}", report.blob_links);
    let fresh = t.sharing_storage(t.registry.config.as_ref().clone());
    for (repo, tag, status) in [
        ("ci/app", "pr-1", 200),
        ("ci/app", "pr-2", 404),
        ("ci/app", "pr-3", 404),
        ("ci/app", "pr-4", 200),
        ("ci/app", "pr-5", 200),
        ("ci/app", "main", 200),
        ("ci/app", "keep-3", 200),
        ("prod/app", "pr-2", 200),
    ] {
        assert_eq!(status_of(&fresh, repo, tag), status, "{repo}:{tag}");
    }
    let events = delivered(&notifier, HOOK);
    let untagged: Vec<_> =
        events.iter().map(|e| (e["action"].as_str().unwrap(), e["target"]["tag"].as_str().unwrap())).collect();
    assert_eq!(untagged, [("delete", "pr-2"), ("delete", "pr-3")]);
    assert_eq!(events[0]["target"]["repository"], "ci/app");
    // Nothing more to untag.
    assert!(block_on_gc(&t, false).untagged.is_empty());
}

#[test]
fn retention_by_age_keeps_what_was_pushed_within_its_days() {
    let (t, _) = retaining(r#"[{"repositories": "*", "tags": "nightly-*", "keepDays": 7}]"#);
    at(&t, PUSHED_MS);
    t.push_image("app", "nightly-old", OCI_MANIFEST, "old");
    at(&t, PUSHED_MS + 5 * DAY_MS);
    t.push_image("app", "nightly-new", OCI_MANIFEST, "new");
    t.push_image("app", "release", OCI_MANIFEST, "released");
    at(&t, PUSHED_MS + 9 * DAY_MS);
    assert_eq!(block_on_gc(&t, false).untagged, ["app:nightly-old"]);
    for (tag, status) in [("nightly-old", 404), ("nightly-new", 200), ("release", 200)] {
        assert_eq!(status_of(&t.sharing_storage(t.registry.config.as_ref().clone()), "app", tag), status, "{tag}");
    }
}

fn block_on_gc(t: &TestRegistry, dry_run: bool) -> wharf::ops::gc::GcReport {
    futures_executor::block_on(t.registry.collect_garbage(t.now.get() * 1000, dry_run)).expect("collection")
}
