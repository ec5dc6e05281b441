//! CI identity through OIDC (`WHARF_OIDC_ISSUERS`): a workload's ID token (GitHub Actions,
//! Kubernetes service accounts, GitLab CI) given as the password of a Basic login, so that
//! `docker login -u oidc --password-stdin` works in a pipeline with no stored secret.
//!
//! ```json
//! [{"issuer": "https://token.actions.githubusercontent.com", "audience": "wharf", "jwks": {"keys": []}}]
//! ```
//!
//! A token (RS256 or ES256) is accepted when its `iss` is a configured issuer, its signature
//! holds under one of that issuer's keys (the `jwks` given, or those its discovery document
//! names: `<issuer>/.well-known/openid-configuration`, then `jwks_uri`, fetched again for a `kid`
//! not seen yet), its `aud` is, or includes, the issuer's audience, and it is within `nbf` and
//! `exp`. Its claims then meet the `oidc` grants of `WHARF_RULES` (see `access`).

use crate::auth::token::{Invalid, parse_jwks};
use crate::base::de::{self, Object};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

/// One accepted issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcIssuer {
    /// Its `iss`, exactly.
    pub issuer: String,
    /// What its tokens' `aud` must be, or include.
    pub audience: String,
    /// Its keys when configured; `None`: from its discovery document.
    pub keys: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    audience: String,
    #[serde(default)]
    jwks: Option<Value>,
}

/// The issuers of `WHARF_OIDC_ISSUERS`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OidcIssuers(pub Vec<OidcIssuer>);

impl OidcIssuers {
    pub fn parse(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        let raw: Vec<Object<RawIssuer>> =
            serde_json::from_str(json).map_err(|e| format!("WHARF_OIDC_ISSUERS: not an array of issuers: {e}"))?;
        let mut issuers = Vec::new();
        for Object(r) in raw {
            if !r.issuer.starts_with("https://") && !r.issuer.starts_with("http://") {
                return Err(format!("WHARF_OIDC_ISSUERS: the issuer \"{}\" is not a URL", r.issuer));
            }
            if r.audience.is_empty() {
                return Err(format!("WHARF_OIDC_ISSUERS: the issuer \"{}\" needs an audience", r.issuer));
            }
            let keys = match r.jwks {
                Some(jwks) => Some(parse_jwks(jwks.to_string().as_bytes(), "WHARF_OIDC_ISSUERS: jwks")?),
                None => None,
            };
            issuers.push(OidcIssuer { issuer: r.issuer, audience: r.audience, keys });
        }
        Ok(Self(issuers))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The issuer of a token whose claims name it.
    pub fn of(&self, token: &OidcToken) -> Option<&OidcIssuer> {
        self.0.iter().find(|i| token.claims.get("iss").and_then(Value::as_str) == Some(i.issuer.as_str()))
    }
}

/// A JWT of a configured issuer, read but not yet verified.
#[derive(Debug, Clone)]
pub struct OidcToken {
    pub alg: String,
    pub kid: Option<String>,
    pub signing_input: Vec<u8>,
    pub signature: Vec<u8>,
    pub claims: Map<String, Value>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Reads `password` as a token of one of `issuers`; `None` when it is no such token (then it is
/// an ordinary password).
pub fn read_token(password: &str, issuers: &OidcIssuers) -> Option<OidcToken> {
    if issuers.is_empty() {
        return None;
    }
    let mut parts = password.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let h: Header = de::from_object(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    let claims: Map<String, Value> = de::from_object(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let token = OidcToken {
        alg: h.alg,
        kid: h.kid,
        signing_input: format!("{header}.{payload}").into_bytes(),
        signature: URL_SAFE_NO_PAD.decode(signature).ok()?,
        claims,
    };
    issuers.of(&token).map(|_| token)
}

impl OidcToken {
    /// The claims, once the signature is known to hold: audience and validity period checked.
    pub fn finish(self, signature_holds: bool, issuer: &OidcIssuer, now: u64) -> Result<Map<String, Value>, Invalid> {
        if !signature_holds || !matches!(self.alg.as_str(), "RS256" | "ES256") {
            return Err(Invalid::Signature);
        }
        let aud_ok = match self.claims.get("aud") {
            Some(Value::String(a)) => *a == issuer.audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(issuer.audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(Invalid::Audience);
        }
        let time = |name: &str| self.claims.get(name).map(|v| v.as_u64().ok_or(Invalid::Malformed)).transpose();
        let exp = time("exp")?.ok_or(Invalid::Malformed)?;
        if exp <= now {
            return Err(Invalid::Expired);
        }
        if time("nbf")?.is_some_and(|nbf| nbf > now) {
            return Err(Invalid::NotYetValid);
        }
        Ok(self.claims)
    }
}

/// What an issuer's discovery document says of its keys.
#[derive(Deserialize)]
pub struct Discovery {
    pub jwks_uri: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuers() -> OidcIssuers {
        OidcIssuers::parse(
            r#"[{"issuer": "https://ci.example", "audience": "wharf", "jwks": {"keys": [{"kty": "EC", "kid": "a"}]}},
                               {"issuer": "https://k8s.example", "audience": "registry"}]"#,
        )
        .unwrap()
    }

    fn token(header: &str, claims: &Value) -> String {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.{}", enc(header), enc(&claims.to_string()), enc("sig"))
    }

    #[test]
    fn issuers_are_read_with_or_without_keys() {
        let i = issuers();
        assert_eq!(i.0[0].keys.as_ref().map(Vec::len), Some(1));
        assert_eq!(i.0[1].keys, None);
        for bad in [
            r#"[{"issuer": "ci.example", "audience": "w"}]"#,
            r#"[{"issuer": "https://a", "audience": ""}]"#,
            r#"[{"issuer": "https://a", "audience": "w", "jwks": {"nokeys": 1}}]"#,
            r#"{}"#,
            r#"[{"issuer": "https://a", "audience": "w", "extra": 1}]"#,
        ] {
            assert!(OidcIssuers::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_token_of_a_configured_issuer_is_read_as_one() {
        let i = issuers();
        let claims = serde_json::json!({"iss": "https://ci.example", "aud": "wharf", "exp": 100});
        let t = read_token(&token(r#"{"alg":"ES256","kid":"a"}"#, &claims), &i).unwrap();
        assert_eq!((t.alg.as_str(), t.kid.as_deref()), ("ES256", Some("a")));
        let other = serde_json::json!({"iss": "https://elsewhere", "aud": "wharf", "exp": 100});
        assert!(read_token(&token(r#"{"alg":"ES256"}"#, &other), &i).is_none());
        assert!(read_token("a plain password", &i).is_none());
        assert!(read_token(&token(r#"{"alg":"ES256"}"#, &claims), &OidcIssuers::default()).is_none());
    }

    #[test]
    fn audience_and_time_are_checked_after_the_signature() {
        let i = issuers();
        let check = |claims: Value, holds: bool| {
            let t = read_token(&token(r#"{"alg":"RS256"}"#, &claims), &i).unwrap();
            t.finish(holds, &i.0[0], 100).map(|_| ())
        };
        let ok = serde_json::json!({"iss": "https://ci.example", "aud": ["x", "wharf"], "exp": 101, "nbf": 99});
        assert_eq!(check(ok.clone(), true), Ok(()));
        assert_eq!(check(ok, false), Err(Invalid::Signature));
        let aud = serde_json::json!({"iss": "https://ci.example", "aud": "other", "exp": 101});
        assert_eq!(check(aud, true), Err(Invalid::Audience));
        let expired = serde_json::json!({"iss": "https://ci.example", "aud": "wharf", "exp": 100});
        assert_eq!(check(expired, true), Err(Invalid::Expired));
        let early = serde_json::json!({"iss": "https://ci.example", "aud": "wharf", "exp": 200, "nbf": 150});
        assert_eq!(check(early, true), Err(Invalid::NotYetValid));
        let no_exp = serde_json::json!({"iss": "https://ci.example", "aud": "wharf"});
        assert_eq!(check(no_exp, true), Err(Invalid::Malformed));
    }
}
