//! Browser UIs on other origins (`WHARF_CORS_ORIGINS`): preflights, the headers of answers to a
//! listed origin, and nothing for any other.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use wharf::Config;
use wharf::auth::AuthConfig;
use wharf::auth::secret::PasswordHash;
use wharf::base::cors::CorsOrigins;
use wharf::base::http::{MemoryBody, Method};

const UI: &str = "https://ui.example.com";

/// A registry whose `team/*` needs alice's password, with one UI origin listed.
fn registry() -> TestRegistry {
    let vars = [
        ("WHARF_RULES", r#"[{"repositories": "team/*", "users": {"alice": ["pull", "push"]}}]"#.to_owned()),
        ("WHARF_USERS", format!(r#"{{"alice":"{}"}}"#, PasswordHash::new("alice-pw", b"salt", 10))),
        ("WHARF_TOKEN_SECRET", "s".repeat(40)),
    ];
    let auth = AuthConfig::from_vars(&|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())).unwrap();
    let cors_origins = CorsOrigins::parse(&format!("{UI}, http://localhost:8080")).unwrap();
    TestRegistry::with_config(Config { auth, cors_origins, ..Config::default() })
}

fn cors_headers(r: &TestResponse) -> Vec<(String, String)> {
    let mut h: Vec<_> = r
        .headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("access-control-"))
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    h.sort();
    h
}

#[test]
fn a_listed_origin_s_preflight_is_answered_on_the_api_and_the_token_endpoint() {
    let t = registry();
    for path in ["/v2/", "/v2/team/app/tags/list", "/v2/team/app/blobs/uploads/", "/token"] {
        let headers = [
            ("Origin", UI),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ];
        let r = t.send(Method::Options, path, &headers, MemoryBody::empty());
        assert_eq!(r.status, 204, "{path}");
        let once = |name: &str| r.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count() == 1;
        assert!(
            ["Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Vary"].iter().all(|h| once(h)),
            "{path}: {:?}",
            r.headers
        );
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some(UI), "{path}");
        assert_eq!(r.header("Access-Control-Allow-Credentials"), Some("true"));
        assert_eq!(r.header("Vary"), Some("Origin"));
        let methods = r.header("Access-Control-Allow-Methods").unwrap();
        assert!(["GET", "HEAD", "PUT", "PATCH", "DELETE", "POST"].iter().all(|m| methods.contains(m)), "{methods}");
        let allowed = r.header("Access-Control-Allow-Headers").unwrap().to_ascii_lowercase();
        for h in ["authorization", "content-type", "accept", "range"] {
            assert!(allowed.contains(h), "{h}: {allowed}");
        }
    }
}

#[test]
fn a_listed_origin_reads_a_protected_listing_with_credentials_and_the_challenge_without() {
    let t = registry();
    let login = format!("Basic {}", STANDARD.encode("alice:alice-pw"));
    // Without credentials: 401, and the page may read the challenge to log in.
    let r = t.get("/v2/team/app/tags/list", &[("Origin", UI)]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(UI));
    let exposed = r.header("Access-Control-Expose-Headers").unwrap();
    for h in [
        "Docker-Content-Digest",
        "Link",
        "WWW-Authenticate",
        "Location",
        "Range",
        "OCI-Subject",
        "Docker-Distribution-API-Version",
    ] {
        assert!(exposed.contains(h), "{h}: {exposed}");
    }
    // With them, past access control: the repository is empty, and the page may read that too.
    let r = t.get("/v2/team/app/tags/list", &[("Origin", "http://localhost:8080"), ("Authorization", &login)]);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("http://localhost:8080"));
    assert_eq!((r.status, r.error_code().as_str()), (404, "NAME_UNKNOWN"));
}

#[test]
fn an_origin_not_listed_gets_no_cors_header_at_all() {
    let t = registry();
    for origin in ["https://evil.example.com", "https://ui.example.com.evil.com", "null", "HTTPS://UI.EXAMPLE.COM "] {
        let preflight = t.send(Method::Options, "/v2/", &[("Origin", origin)], MemoryBody::empty());
        assert_ne!(preflight.status, 204, "{origin}");
        assert_eq!(cors_headers(&preflight), [], "{origin}");
        let r = t.get("/v2/team/app/tags/list", &[("Origin", origin)]);
        assert_eq!((r.status, cors_headers(&r)), (401, vec![]), "{origin}");
    }
    // Nor a request without an origin, nor any at all when none is configured.
    assert_eq!(cors_headers(&t.get("/v2/", &[])), []);
    let open = TestRegistry::new();
    assert_eq!(cors_headers(&open.send(Method::Options, "/v2/", &[("Origin", UI)], MemoryBody::empty())), []);
}
