//! Access control over the in-memory backends: the token flow as clients run it, Basic
//! credentials, rules, expiry, and what each refusal looks like.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use std::cell::RefCell;
use std::rc::Rc;
use wharf::Config;
use wharf::auth::AuthConfig;
use wharf::auth::secret::{DEFAULT_ITERATIONS, PasswordHash, derive};
use wharf::base::http::{MemoryBody, Method};
use wharf::base::names::Digest;
use wharf::registry::host::PasswordDerivation;

const RULES: &str = r#"[
  {"repositories": "public/*", "anonymous": ["pull"], "users": {"alice": ["push"]}},
  {"repositories": "team/*", "users": {"alice": ["pull", "push", "delete"], "bob": ["pull"]}}
]"#;

fn secured(extra: impl FnOnce(&mut Config)) -> TestRegistry {
    let mut config = secured_config(&users());
    extra(&mut config);
    TestRegistry::with_config(config)
}

/// `WHARF_USERS` of alice and bob.
fn users() -> String {
    format!(
        r#"{{"alice":"{}","bob":"{}"}}"#,
        PasswordHash::new("alice-pw", b"salt-a", 10),
        PasswordHash::new("bob-pw", b"salt-b", 10)
    )
}

fn secured_config(users: &str) -> Config {
    let vars =
        [("WHARF_RULES", RULES.to_owned()), ("WHARF_USERS", users.to_owned()), ("WHARF_TOKEN_SECRET", "s".repeat(40))];
    let auth = AuthConfig::from_vars(&|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())).unwrap();
    Config { auth, delete_enabled: true, ..Config::default() }
}

/// A secured registry whose host derives passwords (in wasm here, as WebCrypto would), recording
/// the iteration count of each derivation. It refuses counts above `refuse_above`, as workerd
/// refuses more than 100,000.
fn deriving(users: &str, refuse_above: u32) -> (TestRegistry, Rc<RefCell<Vec<u32>>>) {
    let derivations = Rc::new(RefCell::new(Vec::new()));
    let seen = derivations.clone();
    let derivation: PasswordDerivation = Box::new(move |password, salt, iterations| {
        seen.borrow_mut().push(iterations);
        Box::pin(async move {
            match iterations > refuse_above {
                true => Err("too many iterations".to_owned()),
                false => Ok(derive(&password, &salt, iterations).to_vec()),
            }
        })
    });
    (TestRegistry::with_password_derivation(secured_config(users), derivation), derivations)
}

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{pw}")))
}

/// Runs the token flow: GET /token with the given credentials and scopes.
fn token(t: &TestRegistry, credentials: Option<&str>, scopes: &[&str]) -> String {
    let query: Vec<String> = scopes.iter().map(|s| format!("scope={s}")).collect();
    let headers: Vec<(&str, &str)> = credentials.map(|c| ("Authorization", c)).into_iter().collect();
    let r = t.get(&format!("/token?service=wharf&{}", query.join("&")), &headers);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 300);
    format!("Bearer {}", body["token"].as_str().unwrap())
}

/// Pushes an image with the given Authorization header; returns the manifest response.
fn push_as(t: &TestRegistry, auth: &str, repo: &str, tag: &str) -> TestResponse {
    let h = [("Authorization", auth)];
    let mut descriptors = Vec::new();
    for bytes in [&b"{}"[..], b"layer"] {
        let d = Digest::sha256_of(bytes);
        let r = t.send(
            Method::Post,
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &h,
            MemoryBody::from_bytes(bytes.to_vec()),
        );
        if r.status != 201 {
            return r;
        }
        descriptors.push((d, bytes.len()));
    }
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        descriptors[0].0, descriptors[0].1, descriptors[1].0, descriptors[1].1
    );
    t.send(
        Method::Put,
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Authorization", auth), ("Content-Type", OCI_MANIFEST)],
        MemoryBody::from_bytes(body.into_bytes()),
    )
}

#[test]
fn the_base_endpoint_challenges_anonymous_clients() {
    let t = secured(|_| {});
    let r = t.get("/v2/", &[]);
    assert_eq!((r.status, r.error_code().as_str()), (401, "UNAUTHORIZED"));
    assert_eq!(r.header("WWW-Authenticate"), Some(r#"Bearer realm="https://registry.test/token",service="wharf""#));
    let anonymous_token = token(&t, None, &[]);
    assert_eq!(t.get("/v2/", &[("Authorization", &anonymous_token)]).status, 200);
}

#[test]
fn a_push_runs_the_docker_token_flow() {
    let t = secured(|_| {});
    // Without credentials: 401 naming the scope needed.
    let r = push_as(&t, "", "team/app", "v1");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(r#"Bearer realm="https://registry.test/token",service="wharf",scope="repository:team/app:pull,push""#)
    );
    let bearer = token(&t, Some(&basic("alice", "alice-pw")), &["repository:team/app:pull,push"]);
    assert_eq!(push_as(&t, &bearer, "team/app", "v1").status, 201);
    let pulled = t.get("/v2/team/app/manifests/v1", &[("Authorization", &bearer), ("Accept", OCI_MANIFEST)]);
    assert_eq!(pulled.status, 200);
}

#[test]
fn basic_credentials_work_on_registry_requests_too() {
    let t = secured(|_| {});
    assert_eq!(push_as(&t, &basic("alice", "alice-pw"), "team/app", "v1").status, 201);
    let r = t.get("/v2/team/app/tags/list", &[("Authorization", &basic("bob", "bob-pw"))]);
    assert_eq!(r.status, 200);
}

#[test]
fn a_wrong_password_and_an_unknown_user_get_the_same_401() {
    let t = secured(|_| {});
    let wrong = t.get("/v2/", &[("Authorization", &basic("alice", "nope"))]);
    let unknown = t.get("/v2/", &[("Authorization", &basic("mallory", "alice-pw"))]);
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.body, unknown.body);
    assert!(wrong.header("WWW-Authenticate").is_some());
    let token_wrong = t.get("/token?scope=repository:team/app:pull", &[("Authorization", &basic("alice", "nope"))]);
    assert_eq!(token_wrong.status, 401, "no anonymous token for wrong credentials");
}

#[test]
fn verified_credentials_are_remembered_for_a_minute_and_refused_ones_never() {
    let (t, derivations) = deriving(&users(), u32::MAX);
    let v2 = |user: &str, pw: &str| t.get("/v2/", &[("Authorization", &basic(user, pw))]).status;
    assert_eq!(v2("alice", "alice-pw"), 200);
    assert_eq!(v2("alice", "alice-pw"), 200);
    assert_eq!(*derivations.borrow(), [10], "the second request is answered from the isolate's memory");
    // A wrong password and an unknown user are derived every time, the latter at the default
    // cost; neither is remembered.
    for _ in 0..2 {
        assert_eq!(v2("alice", "nope"), 401);
        assert_eq!(v2("nobody", "alice-pw"), 401);
    }
    assert_eq!(*derivations.borrow(), [10, 10, DEFAULT_ITERATIONS, 10, DEFAULT_ITERATIONS]);
    // Another user's credentials are their own entry.
    assert_eq!(v2("bob", "bob-pw"), 200);
    assert_eq!(v2("bob", "alice-pw"), 401);
    assert_eq!(derivations.borrow().len(), 7);
    // After a minute, the password is derived again.
    t.now.set(t.now.get() + 61);
    assert_eq!(v2("alice", "alice-pw"), 200);
    assert_eq!(derivations.borrow().len(), 8);
}

#[test]
fn a_hash_keeps_its_own_iteration_count_and_one_the_host_refuses_is_derived_in_wasm() {
    // The former default, the current one, and more than workerd's WebCrypto derives.
    let users = format!(
        r#"{{"old":"{}","new":"{}","strong":"{}"}}"#,
        PasswordHash::new("old-pw", b"salt-o", 10_000),
        PasswordHash::new("new-pw", b"salt-n", DEFAULT_ITERATIONS),
        PasswordHash::new("strong-pw", b"salt-s", 150_000)
    );
    let (t, derivations) = deriving(&users, 100_000);
    let v2 = |user: &str, pw: &str| t.get("/v2/", &[("Authorization", &basic(user, pw))]).status;
    assert_eq!(v2("old", "old-pw"), 200);
    assert_eq!(v2("new", "new-pw"), 200);
    // The host refuses 150,000 iterations: the password is derived in wasm, and verifies.
    assert_eq!(v2("strong", "strong-pw"), 200);
    assert_eq!(v2("strong", "old-pw"), 401);
    assert_eq!(*derivations.borrow(), [10_000, DEFAULT_ITERATIONS, 150_000, 150_000]);
}

#[test]
fn valid_credentials_without_the_right_are_403() {
    let t = secured(|_| {});
    let r = push_as(&t, &basic("bob", "bob-pw"), "team/app", "v1");
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"));
    assert!(r.header("WWW-Authenticate").is_none());
    let bob = token(&t, Some(&basic("bob", "bob-pw")), &["repository:team/app:pull,push"]);
    assert_eq!(push_as(&t, &bob, "team/app", "v1").status, 403, "bob's token holds pull only and bob may not push");
}

#[test]
fn anonymous_pulls_follow_the_rules() {
    let t = secured(|_| {});
    assert_eq!(push_as(&t, &basic("alice", "alice-pw"), "public/tool", "v1").status, 201);
    assert_eq!(push_as(&t, &basic("alice", "alice-pw"), "team/app", "v1").status, 201);
    let anon = token(&t, None, &["repository:public/tool:pull"]);
    let h = [("Authorization", anon.as_str()), ("Accept", OCI_MANIFEST)];
    assert_eq!(t.get("/v2/public/tool/manifests/v1", &h).status, 200);
    assert_eq!(t.get("/v2/public/tool/manifests/v1", &[("Accept", OCI_MANIFEST)]).status, 200, "without any token");
    let denied = t.get("/v2/team/app/manifests/v1", &[("Accept", OCI_MANIFEST)]);
    assert_eq!(denied.status, 401);
    // An anonymous token asking for the private repository is granted nothing for it.
    let anon_team = token(&t, None, &["repository:team/app:pull"]);
    assert_eq!(
        t.get("/v2/team/app/manifests/v1", &[("Authorization", &anon_team), ("Accept", OCI_MANIFEST)]).status,
        401
    );
}

#[test]
fn a_token_for_one_repository_does_not_open_another() {
    let t = secured(|_| {});
    push_as(&t, &basic("alice", "alice-pw"), "team/a", "v1");
    push_as(&t, &basic("alice", "alice-pw"), "team/b", "v1");
    let for_a = token(&t, Some(&basic("alice", "alice-pw")), &["repository:team/a:pull"]);
    assert_eq!(t.get("/v2/team/a/tags/list", &[("Authorization", &for_a)]).status, 200);
    let r = t.get("/v2/team/b/tags/list", &[("Authorization", &for_a)]);
    assert_eq!(r.status, 401);
    assert!(r.header("WWW-Authenticate").unwrap().contains(r#"scope="repository:team/b:pull""#));
}

#[test]
fn an_expired_or_tampered_token_is_401() {
    let t = secured(|_| {});
    let bearer = token(&t, Some(&basic("alice", "alice-pw")), &["repository:team/app:pull"]);
    push_as(&t, &basic("alice", "alice-pw"), "team/app", "v1");
    assert_eq!(t.get("/v2/team/app/tags/list", &[("Authorization", &bearer)]).status, 200);
    t.now.set(t.now.get() + 301);
    let expired = t.get("/v2/team/app/tags/list", &[("Authorization", &bearer)]);
    assert_eq!((expired.status, expired.error_code().as_str()), (401, "UNAUTHORIZED"));
    t.now.set(t.now.get() - 301);
    let mut tampered = bearer.clone();
    tampered.pop();
    tampered.push(if bearer.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(t.get("/v2/team/app/tags/list", &[("Authorization", &tampered)]).status, 401);
}

#[test]
fn the_catalog_lists_only_what_the_caller_may_pull() {
    let t = secured(|_| {});
    for repo in ["public/tool", "team/app"] {
        assert_eq!(push_as(&t, &basic("alice", "alice-pw"), repo, "v1").status, 201);
    }
    let anon = t.get("/v2/_catalog", &[]);
    assert_eq!(anon.json()["repositories"], serde_json::json!(["public/tool"]));
    let alice = t.get("/v2/_catalog", &[("Authorization", &basic("alice", "alice-pw"))]);
    assert_eq!(alice.json()["repositories"], serde_json::json!(["public/tool", "team/app"]));
}

#[test]
fn walking_the_catalog_page_by_page_reveals_no_hidden_name() {
    let t = secured(|_| {});
    let alice = basic("alice", "alice-pw");
    let repos = ["public/a", "public/b", "team/hidden-a", "team/hidden-b", "team/hidden-c", "public/z", "team/zz"];
    for repo in repos {
        assert_eq!(push_as(&t, &alice, repo, "v1").status, 201, "{repo}");
    }
    for (who, auth, expected) in [
        ("anonymous", None, vec!["public/a", "public/b", "public/z"]),
        ("alice", Some(alice.as_str()), {
            let mut all = repos.to_vec();
            all.sort();
            all
        }),
    ] {
        for n in [1, 2, 3] {
            let mut seen = Vec::new();
            let mut next = Some(format!("/v2/_catalog?n={n}"));
            while let Some(path) = next.take() {
                let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
                let r = t.get(&path, &headers);
                assert_eq!(r.status, 200, "{who} {path}");
                let link = r.header("Link").map(str::to_owned);
                if who == "anonymous" {
                    assert!(!link.as_deref().unwrap_or_default().contains("team"), "{path}: {link:?}");
                    assert!(!String::from_utf8_lossy(&r.body).contains("team"), "{path}");
                }
                seen.extend(
                    r.json()["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()),
                );
                next = link.map(|l| l[1..l.find('>').unwrap()].to_owned());
            }
            assert_eq!(seen, expected, "{who}, n={n}");
        }
    }
}

#[test]
fn a_mount_from_a_repository_the_caller_cannot_pull_becomes_an_upload() {
    let t = secured(|_| {});
    push_as(&t, &basic("alice", "alice-pw"), "team/app", "v1");
    let d = Digest::sha256_of(b"layer");
    let mounted = t.send(
        Method::Post,
        &format!("/v2/public/copy/blobs/uploads/?mount={d}&from=team/app"),
        &[("Authorization", &basic("alice", "alice-pw"))],
        MemoryBody::empty(),
    );
    assert_eq!(mounted.status, 201, "alice may pull team/app and push public/copy");
    // A token for the target only: no pull right on the source, so no mount.
    let target_only = token(
        &t,
        Some(&basic("alice", "alice-pw")),
        &["repository:public/other:pull,push", "repository:public/third:push"],
    );
    let r = t.send(
        Method::Post,
        &format!("/v2/public/other/blobs/uploads/?mount={d}&from=team/app"),
        &[("Authorization", &target_only)],
        MemoryBody::empty(),
    );
    assert_eq!(r.status, 202);
    // Without a source, mounting across repositories is off under access control.
    let r = t.send(
        Method::Post,
        &format!("/v2/public/third/blobs/uploads/?mount={d}"),
        &[("Authorization", &target_only)],
        MemoryBody::empty(),
    );
    assert_eq!(r.status, 202);
}

#[test]
fn a_read_only_registry_refuses_writes_even_to_those_allowed() {
    let t = secured(|c| c.read_only = true);
    let r = push_as(&t, &basic("alice", "alice-pw"), "team/app", "v1");
    assert_eq!((r.status, r.error_code().as_str()), (405, "UNSUPPORTED"));
}

#[test]
fn a_token_for_a_plugin_repository_cannot_push_an_image() {
    let t = secured(|c| c.allowed_classes = vec!["image".into(), "plugin".into()]);
    let plugin = token(&t, Some(&basic("alice", "alice-pw")), &["repository(plugin):team/app:pull,push"]);
    let r = push_as(&t, &plugin, "team/app", "v1");
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"));
    assert_eq!(r.json()["errors"][0]["message"], "repository not authorized for manifest class image");
    let image = token(&t, Some(&basic("alice", "alice-pw")), &["repository:team/app:pull,push"]);
    assert_eq!(push_as(&t, &image, "team/app", "v1").status, 201);
}

#[test]
fn without_rules_the_registry_is_open() {
    let t = TestRegistry::new();
    assert_eq!(t.get("/v2/", &[]).status, 200);
    assert_eq!(t.get("/token", &[]).status, 404);
}

/// An external issuer whose "signature" holds when it reads `good` (the real check is
/// WebCrypto's, exercised end to end on workerd); here the claims handling is under test.
fn with_external_issuer() -> TestRegistry {
    let mut t = secured(|c| {
        let auth = c.auth.as_mut().unwrap();
        auth.issuer = Some(
            wharf::auth::token::Issuer::parse("https://auth.example".into(), r#"{"keys":[{"kty":"EC","kid":"k1"}]}"#)
                .unwrap(),
        );
    });
    t.registry = std::mem::replace(
        &mut t.registry,
        wharf::Registry::new(t.objects.clone(), t.kv.clone(), Config::default(), Box::new(|| 0)),
    )
    .with_signature_check(Box::new(|alg, jwk, _data, signature| {
        Box::pin(async move { Ok(alg == "ES256" && jwk["kid"] == "k1" && signature == b"good") })
    }));
    t
}

fn external_token(claims: serde_json::Value, signature: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("Bearer {header}.{payload}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[test]
fn tokens_of_an_external_issuer_are_checked_for_signature_issuer_audience_and_time() {
    let t = with_external_issuer();
    push_as(&t, &basic("alice", "alice-pw"), "team/app", "v1");
    let now = t.now.get();
    let claims = |iss: &str, aud: serde_json::Value, exp: u64| {
        serde_json::json!({"iss": iss, "sub": "ci", "aud": aud, "exp": exp, "nbf": now - 1,
            "access": [{"type": "repository", "name": "team/app", "actions": ["pull"]}]})
    };
    let get = |auth: &str| t.get("/v2/team/app/tags/list", &[("Authorization", auth)]).status;
    assert_eq!(get(&external_token(claims("https://auth.example", "wharf".into(), now + 60), b"good")), 200);
    assert_eq!(
        get(&external_token(claims("https://auth.example", serde_json::json!(["x", "wharf"]), now + 60), b"good")),
        200
    );
    assert_eq!(get(&external_token(claims("https://auth.example", "wharf".into(), now + 60), b"bad")), 401);
    assert_eq!(get(&external_token(claims("https://other", "wharf".into(), now + 60), b"good")), 401);
    assert_eq!(get(&external_token(claims("https://auth.example", "elsewhere".into(), now + 60), b"good")), 401);
    assert_eq!(get(&external_token(claims("https://auth.example", "wharf".into(), now), b"good")), 401);
}

/// A request body that records whether anything read it.
struct Watched(Rc<std::cell::Cell<bool>>, MemoryBody);

impl wharf::base::http::BodyReader for Watched {
    type Raw = MemoryBody;
    async fn chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        self.0.set(true);
        self.1.chunk().await
    }
    fn take_raw(&mut self) -> Option<MemoryBody> {
        self.0.set(true);
        self.1.take_raw()
    }
}

/// Sends `method path` with a body of a megabyte; the status, and whether the body was read.
fn body_read(t: &TestRegistry, method: Method, path: &str, headers: &[(&str, &str)]) -> (u16, bool) {
    let read = Rc::new(std::cell::Cell::new(false));
    let mut h = wharf::base::http::Headers::new();
    for (n, v) in headers {
        h.append(n, v);
    }
    let body = Watched(read.clone(), MemoryBody::from_bytes(vec![0; 1 << 20]));
    let request = wharf::base::http::Request::new(method, path, h, body).with_origin("https://registry.test");
    let response = futures_executor::block_on(t.registry.handle(request));
    (response.status, read.get())
}

#[test]
fn the_body_of_a_request_refused_before_authentication_is_not_read() {
    let t = secured(|_| {});
    // Refused before access control looks at it (a malformed name), or by it.
    assert_eq!(body_read(&t, Method::Post, "/v2/Team/App/blobs/uploads/", &[]), (400, false));
    assert_eq!(body_read(&t, Method::Post, "/v2/team/app/blobs/uploads/", &[]), (401, false));
    let bob = basic("bob", "bob-pw");
    let as_bob = [("Authorization", bob.as_str())];
    assert_eq!(body_read(&t, Method::Post, "/v2/team/app/blobs/uploads/", &as_bob), (403, false));
    // An admitted client refused for its request's own sake has its body read and dropped, so
    // that it sees the answer rather than a reset connection.
    let alice = basic("alice", "alice-pw");
    let as_alice = [("Authorization", alice.as_str())];
    let wrong = format!("/v2/team/app/blobs/uploads/?digest={}", Digest::sha256_of(b"other"));
    assert_eq!(body_read(&t, Method::Post, &wrong, &as_alice), (400, true));
}

/// An OIDC issuer reached over HTTP: its discovery document and its keys, which a test may
/// rotate; it counts what it was asked.
#[derive(Clone, Default)]
struct FakeIssuer {
    keys: Rc<RefCell<Vec<serde_json::Value>>>,
    requests: Rc<RefCell<Vec<String>>>,
}

const CI: &str = "https://ci.example";

impl wharf::registry::host::Upstream<wharf::storage::memory::MemoryObjects> for FakeIssuer {
    fn fetch(
        &self,
        request: wharf::registry::host::UpstreamRequest,
    ) -> futures_util::future::LocalBoxFuture<'_, Result<wharf::registry::host::UpstreamResponse<MemoryBody>, String>>
    {
        Box::pin(async move {
            self.requests.borrow_mut().push(request.url.clone());
            let body = match request.url.strip_prefix(CI) {
                Some("/.well-known/openid-configuration") => {
                    serde_json::json!({"issuer": CI, "jwks_uri": format!("{CI}/keys")})
                }
                Some("/keys") => serde_json::json!({"keys": *self.keys.borrow()}),
                _ => return Err(format!("unknown: {}", request.url)),
            };
            Ok(wharf::registry::host::UpstreamResponse {
                status: 200,
                headers: wharf::base::http::Headers::new(),
                body: Some(MemoryBody::from_bytes(body.to_string().into_bytes())),
            })
        })
    }
    fn read(
        &self,
        body: MemoryBody,
        _limit: usize,
    ) -> futures_util::future::LocalBoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move { Ok(body.into_bytes()) })
    }
    fn tee(&self, body: MemoryBody, _length: u64) -> Result<(Vec<u8>, MemoryBody), String> {
        Ok((body.into_bytes(), MemoryBody::empty()))
    }
    fn pass(&self, body: MemoryBody) -> Vec<u8> {
        body.into_bytes()
    }
}

const OIDC_RULES: &str = r#"[
  {"repositories": "gh/${repository}",
   "oidc": {"claims": {"iss": "https://ci.example", "repository_owner": "acme"}, "actions": ["pull", "push"]}},
  {"repositories": "team/*", "users": {"alice": ["pull", "push"]}}
]"#;

/// A registry accepting CI's tokens (keys from its discovery document), whose "signature" holds
/// when it reads `good` under a key the issuer publishes (WebCrypto's real check runs end to
/// end on workerd).
fn with_oidc(issuer: &FakeIssuer) -> TestRegistry {
    let vars = [
        ("WHARF_RULES", OIDC_RULES.to_owned()),
        ("WHARF_USERS", users()),
        ("WHARF_TOKEN_SECRET", "s".repeat(40)),
        ("WHARF_OIDC_ISSUERS", format!(r#"[{{"issuer": "{CI}", "audience": "wharf"}}]"#)),
    ];
    let auth = AuthConfig::from_vars(&|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())).unwrap();
    let t = TestRegistry::with_config(Config { auth, ..Config::default() });
    let issuer = issuer.clone();
    t.rebuilt(move |r| {
        r.with_oidc_discovery(Box::new(issuer)).with_signature_check(Box::new(|alg, jwk, _data, signature| {
            Box::pin(async move {
                Ok(matches!(alg.as_str(), "RS256" | "ES256") && jwk["use"] == "sig" && signature == b"good")
            })
        }))
    })
}

/// A Basic login whose password is CI's token for `repository` of `owner`.
fn oidc_login(kid: &str, claims: serde_json::Value, signature: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    basic("oidc", &format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

fn ci_claims(t: &TestRegistry, owner: &str, aud: &str, exp_in: i64) -> serde_json::Value {
    let now = t.now.get() as i64;
    serde_json::json!({"iss": CI, "aud": aud, "sub": format!("repo:{owner}/app:ref:refs/heads/main"),
        "repository": format!("{owner}/app"), "repository_owner": owner, "exp": now + exp_in, "nbf": now - 5})
}

#[test]
fn a_ci_token_is_a_basic_password_granted_by_its_claims() {
    let issuer = FakeIssuer::default();
    issuer.keys.borrow_mut().push(serde_json::json!({"kty": "RSA", "kid": "k1", "use": "sig"}));
    let t = with_oidc(&issuer);
    let login = oidc_login("k1", ci_claims(&t, "acme", "wharf", 300), b"good");
    assert_eq!(push_as(&t, &login, "gh/acme/app", "v1").status, 201);
    assert_eq!(t.get("/v2/gh/acme/app/tags/list", &[("Authorization", &login)]).status, 200);
    // Its claims name gh/acme/app alone: elsewhere it is refused, and a user's rules are not its.
    assert_eq!(push_as(&t, &login, "gh/acme/other", "v1").error_code(), "DENIED");
    assert_eq!(t.get("/v2/team/app/tags/list", &[("Authorization", &login)]).status, 403);
    // The token endpoint grants what the claims are granted.
    let bearer = token(&t, Some(&login), &["repository:gh/acme/app:pull,push", "repository:team/app:pull"]);
    let payload = bearer.split('.').nth(1).unwrap();
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let granted = serde_json::json!([{"type": "repository", "name": "gh/acme/app", "actions": ["pull", "push"]}]);
    assert_eq!(claims["access"], granted);
    assert_eq!(t.get("/v2/gh/acme/app/tags/list", &[("Authorization", &bearer)]).status, 200);
    // The issuer was asked once: its document, then its keys.
    assert_eq!(*issuer.requests.borrow(), [format!("{CI}/.well-known/openid-configuration"), format!("{CI}/keys")]);
}

#[test]
fn a_forged_expired_or_foreign_ci_token_is_refused() {
    let issuer = FakeIssuer::default();
    issuer.keys.borrow_mut().push(serde_json::json!({"kty": "RSA", "kid": "k1", "use": "sig"}));
    let t = with_oidc(&issuer);
    let status = |login: &str| t.get("/v2/gh/acme/app/tags/list", &[("Authorization", login)]).status;
    assert_eq!(status(&oidc_login("k1", ci_claims(&t, "acme", "wharf", 300), b"forged")), 401);
    assert_eq!(status(&oidc_login("k1", ci_claims(&t, "acme", "wharf", -1), b"good")), 401, "expired");
    assert_eq!(status(&oidc_login("k1", ci_claims(&t, "acme", "elsewhere", 300), b"good")), 401, "audience");
    assert_eq!(status(&oidc_login("k9", ci_claims(&t, "acme", "wharf", 300), b"good")), 401, "unknown key");
    let mut other = ci_claims(&t, "acme", "wharf", 300);
    other["iss"] = "https://other.example".into();
    // Not a configured issuer's: an ordinary password, and a wrong one.
    assert_eq!(status(&oidc_login("k1", other, b"good")), 401);
    // Another owner's token is valid but granted nothing here.
    assert_eq!(status(&oidc_login("k1", ci_claims(&t, "evil", "wharf", 300), b"good")), 403);
}

#[test]
fn a_key_the_issuer_rotated_in_is_fetched_at_most_once_a_minute() {
    let issuer = FakeIssuer::default();
    issuer.keys.borrow_mut().push(serde_json::json!({"kty": "RSA", "kid": "k1", "use": "sig"}));
    let t = with_oidc(&issuer);
    let status = |kid: &str| {
        let login = oidc_login(kid, ci_claims(&t, "acme", "wharf", 300), b"good");
        t.get("/v2/gh/acme/app/tags/list", &[("Authorization", &login)]).status
    };
    assert_eq!(status("k1"), 404, "authorized; the repository is empty");
    issuer.keys.borrow_mut().push(serde_json::json!({"kty": "RSA", "kid": "k2", "use": "sig"}));
    // Within the minute, unknown keys do not make wharf ask again.
    for _ in 0..5 {
        assert_eq!(status("k2"), 401);
    }
    assert_eq!(issuer.requests.borrow().len(), 2);
    t.wait(61);
    assert_eq!(status("k2"), 404, "fetched again, k2 is known");
    assert_eq!(status("k1"), 404);
    assert_eq!(issuer.requests.borrow().len(), 4);
}
