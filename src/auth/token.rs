//! Bearer tokens: JWTs (RFC 7519) signed with HMAC-SHA256 under `WHARF_TOKEN_SECRET`, carrying
//! the Docker token specification's `access` claim.

use super::access::Access;
use super::secret::constant_time_eq;
use crate::base::de::{self, Members, Object};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The issuer wharf writes into its tokens.
pub const ISSUER: &str = "wharf";

/// The claims of wharf's tokens (RFC 7519 §4.1, and the Docker token specification's `access`).
/// Times are whole seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user, empty for anonymous tokens.
    pub sub: String,
    /// The service (`WHARF_SERVICE`) the token is for.
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    /// May be absent or null.
    #[serde(default, deserialize_with = "access_list")]
    pub access: Vec<Access>,
}

/// An `access` claim: a list of access entries, each a JSON object; null reads as none.
fn access_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Access>, D::Error> {
    let list: Option<Vec<Object<Access>>> = Option::deserialize(deserializer)?;
    Ok(list.into_iter().flatten().map(|a| a.0).collect())
}

/// A token's JOSE header (RFC 7515 §4.1): the algorithm, and which key signed it.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// A base64url segment of a token, decoded and read as JSON (an object).
fn segment<T: DeserializeOwned>(encoded: &str) -> Result<T, Invalid> {
    de::from_object(&URL_SAFE_NO_PAD.decode(encoded).map_err(|_| Invalid::Malformed)?).map_err(|_| Invalid::Malformed)
}

/// Why a token was refused (for the log; clients only see 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    Signature,
    Expired,
    NotYetValid,
    Audience,
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

pub fn sign(claims: &Claims, key: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    // Strings, integers and lists of them always serialise.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(mac(key, signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

/// Checks signature (in constant time), algorithm, audience and validity period at `now`.
pub fn verify(token: &str, key: &[u8], service: &str, now: u64) -> Result<Claims, Invalid> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid::Malformed);
    };
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| Invalid::Malformed)?;
    let expected = mac(key, format!("{header}.{payload}").as_bytes());
    if !constant_time_eq(&signature, &expected) {
        return Err(Invalid::Signature);
    }
    // Only after the signature holds is anything in the token read.
    if segment::<Header>(header)?.alg != "HS256" {
        return Err(Invalid::Malformed);
    }
    let claims: Claims = segment(payload)?;
    if claims.aud != service {
        return Err(Invalid::Audience);
    }
    in_period(claims, now)
}

/// The claims, if `now` lies in their validity period.
fn in_period(claims: Claims, now: u64) -> Result<Claims, Invalid> {
    if now >= claims.exp {
        return Err(Invalid::Expired);
    }
    if now < claims.nbf {
        return Err(Invalid::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            aud: "wharf".into(),
            exp,
            nbf: 100,
            iat: 100,
            access: vec![Access::parse_scope("repository:a/b:pull").unwrap()],
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let t = sign(&claims(400), b"key");
        assert_eq!(verify(&t, b"key", "wharf", 100).unwrap(), claims(400));
        assert_eq!(verify(&t, b"key", "wharf", 399).unwrap().sub, "alice");
        assert_eq!(verify(&t, b"key", "wharf", 400), Err(Invalid::Expired));
        assert_eq!(verify(&t, b"key", "wharf", 99), Err(Invalid::NotYetValid));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let t = sign(&claims(400), b"key");
        assert_eq!(verify(&t, b"other key", "wharf", 200), Err(Invalid::Signature));
        assert_eq!(verify(&t, b"key", "elsewhere", 200), Err(Invalid::Audience));
        // Swap in a payload granting more: the signature no longer matches.
        let mut more = claims(400);
        more.access[0].actions.push("push".into());
        let forged_payload = sign(&more, b"attacker").split('.').nth(1).unwrap().to_owned();
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(verify(&forged, b"key", "wharf", 200), Err(Invalid::Signature));
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(verify(junk, b"key", "wharf", 200).is_err(), "{junk}");
        }
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(400)).unwrap());
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert!(verify(&format!("{header}.{payload}."), b"key", "wharf", 200).is_err());
    }

    /// A token signed with `key` whose payload is `payload` as it is.
    fn signed(header: &str, payload: &str) -> String {
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac(b"key", input.as_bytes())))
    }

    #[test]
    fn claims_are_written_in_their_order() {
        let t = sign(&claims(400), b"key");
        let payload = URL_SAFE_NO_PAD.decode(t.split('.').nth(1).unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            r#"{"iss":"wharf","sub":"alice","aud":"wharf","exp":400,"nbf":100,"iat":100,"access":[{"type":"repository","name":"a/b","actions":["pull"]}]}"#
        );
    }

    #[test]
    fn a_claim_given_twice_or_mistyped_is_malformed() {
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let good = r#"{"iss":"wharf","sub":"alice","aud":"wharf","exp":400,"nbf":100,"iat":100}"#;
        assert_eq!(verify(&signed(header, good), b"key", "wharf", 200).unwrap().access, []);
        let with_null = good.replace(r#""iat":100"#, r#""iat":100,"access":null"#);
        assert_eq!(verify(&signed(header, &with_null), b"key", "wharf", 200).unwrap().access, []);
        let malformed = [
            (header, good.replace(r#""aud":"wharf""#, r#""aud":"elsewhere","aud":"wharf""#)),
            (header, good.replace(r#""exp":400"#, r#""exp":100,"exp":400"#)),
            (header, good.replace(r#""iat":100"#, r#""iat":100,"access":[],"access":[]"#)),
            (header, good.replace(r#""exp":400"#, r#""exp":400.5"#)),
            (header, good.replace(r#""exp":400"#, r#""exp":"400""#)),
            (header, good.replace(r#""sub":"alice""#, r#""sub":null"#)),
            (header, good.replace(r#""iat":100"#, r#""iat":100,"access":[["repository","a/b",["push"]]]"#)),
            (header, r#"["wharf","alice","wharf",400,100,100]"#.to_owned()),
            (r#"{"alg":"HS256","alg":"none"}"#, good.to_owned()),
            (r#"["HS256"]"#, good.to_owned()),
        ];
        for (header, payload) in malformed {
            assert_eq!(
                verify(&signed(header, &payload), b"key", "wharf", 200),
                Err(Invalid::Malformed),
                "{header} {payload}"
            );
        }
    }

    #[test]
    fn external_claims_fill_in_what_other_issuers_leave_out() {
        let check = |payload: &str| {
            let check = ExternalCheck {
                alg: "ES256".into(),
                jwk: serde_json::Value::Null,
                signing_input: Vec::new(),
                signature: Vec::new(),
                payload: payload.as_bytes().to_vec(),
            };
            check.finish(true, "https://auth.example", "wharf", 200)
        };
        let c = check(r#"{"iss":"https://auth.example","aud":["x","wharf"],"exp":400}"#).unwrap();
        assert_eq!((c.sub.as_str(), c.aud.as_str(), c.nbf, c.iat), ("", "wharf", 0, 0));
        let c = check(r#"{"iss":"https://auth.example","aud":"wharf","exp":400,"sub":null,"nbf":null}"#).unwrap();
        assert_eq!((c.sub.as_str(), c.nbf), ("", 0));
        assert_eq!(check(r#"{"iss":7,"aud":"wharf","exp":400}"#), Err(Invalid::Audience));
        assert_eq!(check(r#"{"aud":"wharf","exp":400}"#), Err(Invalid::Audience));
        assert_eq!(check(r#"{"iss":"https://auth.example","aud":{"wharf":1},"exp":400}"#), Err(Invalid::Audience));
        assert_eq!(
            check(r#"{"iss":"https://auth.example","aud":"x","aud":"wharf","exp":400}"#),
            Err(Invalid::Malformed)
        );
        assert_eq!(check(r#"{"iss":"https://auth.example","aud":"wharf","exp":400.5}"#), Err(Invalid::Malformed));
        assert_eq!(check(r#"{"iss":"https://auth.example","aud":"wharf"}"#), Err(Invalid::Malformed));
        assert_eq!(check(r#"["https://auth.example","wharf",400]"#), Err(Invalid::Malformed));
    }

    #[test]
    fn a_jwk_set_names_its_keys_once() {
        let set = Issuer::parse("i".into(), r#"{"keys":[{"kty":"EC","kid":"k1","x":"a"}]}"#).unwrap();
        assert_eq!(set.keys[0]["x"], "a");
        assert_eq!(set.key("ES256", None), Some(&set.keys[0]));
        assert_eq!(set.key("RS256", None), None);
        for refused in [
            r#"{"keys":[]}"#,
            r#"{"keys":{}}"#,
            r#"{"key":[{"kty":"EC"}]}"#,
            r#"[[{"kty":"EC"}]]"#,
            r#"{"keys":[{"kty":"EC","kid":"k1","kid":"k2"}]}"#,
            r#"{"keys":[{"kty":"EC"}],"keys":[{"kty":"RSA"}]}"#,
        ] {
            assert!(Issuer::parse("i".into(), refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn segments_are_unpadded_base64url() {
        let t = sign(&claims(400), b"key");
        let padded: Vec<String> = t
            .split('.')
            .map(|s| match s.len() % 4 {
                0 => s.to_owned(),
                n => format!("{s}{}", "=".repeat(4 - n)),
            })
            .collect();
        assert_ne!(padded.join("."), t);
        assert!(verify(&padded.join("."), b"key", "wharf", 200).is_err());
    }
}

/// A token issuer other than wharf whose tokens are accepted (`WHARF_TOKEN_ISSUER` and its
/// public keys, `WHARF_TOKEN_JWKS`), so that an existing auth server can front wharf.
#[derive(Debug, Clone, PartialEq)]
pub struct Issuer {
    /// The `iss` its tokens carry.
    pub name: String,
    /// Its public keys as JWKs (EC P-256 for ES256, RSA for RS256), as the host's crypto takes
    /// them.
    pub keys: Vec<serde_json::Value>,
}

/// A JWK set (RFC 7517 §5). Each key is handed to the host's crypto as written, so wharf reads
/// only `kty` and `kid` from it; no member of a key may be given twice.
#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Members<serde_json::Value>>,
}

impl Issuer {
    pub fn parse(name: String, jwks: &str) -> Result<Self, String> {
        let keys = parse_jwks(jwks.as_bytes(), "WHARF_TOKEN_JWKS")?;
        if keys.is_empty() {
            return Err("WHARF_TOKEN_JWKS: no keys".into());
        }
        Ok(Self { name, keys })
    }

    fn key(&self, alg: &str, kid: Option<&str>) -> Option<&serde_json::Value> {
        pick_key(&self.keys, alg, kid)
    }
}

/// Reads a JWK set (`{"keys": [...]}`); `what` names it in errors.
pub fn parse_jwks(json: &[u8], what: &str) -> Result<Vec<serde_json::Value>, String> {
    let set: JwkSet =
        de::from_object(json).map_err(|e| format!("{what}: expected a JWK set, {{\"keys\": [...]}}: {e}"))?;
    Ok(set.keys.into_iter().map(|k| serde_json::Value::Object(k.0.into_iter().collect())).collect())
}

/// The key for a token's `alg` (ES256 or RS256) and `kid` among `keys`: the matching `kid`, or
/// the only key of the right type when the token names none.
pub fn pick_key<'a>(keys: &'a [serde_json::Value], alg: &str, kid: Option<&str>) -> Option<&'a serde_json::Value> {
    let kty = match alg {
        "ES256" => "EC",
        "RS256" => "RSA",
        _ => return None,
    };
    let mut fitting = keys.iter().filter(|k| k["kty"] == kty);
    match kid {
        Some(kid) => fitting.find(|k| k["kid"] == kid),
        None => {
            let first = fitting.next();
            if fitting.next().is_some() { None } else { first }
        }
    }
}

/// A token signed by the external issuer, whose signature the host checks (WebCrypto on
/// Workers) before [`ExternalCheck::finish`] reads its claims.
#[derive(Debug, Clone)]
pub struct ExternalCheck {
    pub alg: String,
    pub jwk: serde_json::Value,
    pub signing_input: Vec<u8>,
    pub signature: Vec<u8>,
    payload: Vec<u8>,
}

impl ExternalCheck {
    /// The claims, once the signature is known to hold: issuer, audience (a string or a list
    /// holding `service`) and validity period are checked here.
    pub fn finish(self, signature_holds: bool, issuer: &str, service: &str, now: u64) -> Result<Claims, Invalid> {
        if !signature_holds {
            return Err(Invalid::Signature);
        }
        let claims: ExternalClaims = de::from_object(&self.payload).map_err(|_| Invalid::Malformed)?;
        if claims.iss != issuer {
            return Err(Invalid::Audience);
        }
        let aud_ok = match &claims.aud {
            serde_json::Value::String(a) => a == service,
            serde_json::Value::Array(list) => list.iter().any(|a| a == service),
            _ => false,
        };
        if !aud_ok {
            return Err(Invalid::Audience);
        }
        // What other issuers may leave out, filled in as wharf's own claims have it.
        let claims = Claims {
            iss: issuer.to_owned(),
            sub: claims.sub.unwrap_or_default(),
            aud: service.to_owned(),
            exp: claims.exp,
            nbf: claims.nbf.unwrap_or_default(),
            iat: claims.iat.unwrap_or_default(),
            access: claims.access,
        };
        in_period(claims, now)
    }
}

/// The claims of an external issuer's token: `aud` a string or a list of strings (RFC 7519
/// §4.1.3); `sub`, `nbf` and `iat` may be absent or null. `iss` and `aud` are compared, not
/// read, so that one of another type is another issuer's or audience's.
#[derive(Deserialize)]
struct ExternalClaims {
    #[serde(default)]
    iss: serde_json::Value,
    #[serde(default)]
    aud: serde_json::Value,
    sub: Option<String>,
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    #[serde(default, deserialize_with = "access_list")]
    access: Vec<Access>,
}

/// The outcome of reading a bearer token: checked (wharf's own), or awaiting the external
/// issuer's signature check.
#[derive(Debug)]
pub enum Verification {
    Verified(Claims),
    External(ExternalCheck),
}

/// Verifies wharf's own tokens, and prepares the check of an external issuer's.
pub fn verify_any(
    token: &str,
    key: &[u8],
    issuer: Option<&Issuer>,
    service: &str,
    now: u64,
) -> Result<Verification, Invalid> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid::Malformed);
    };
    let h: Header = segment(header)?;
    if h.alg == "HS256" {
        return verify(token, key, service, now).map(Verification::Verified);
    }
    let issuer = issuer.ok_or(Invalid::Malformed)?;
    let jwk = issuer.key(&h.alg, h.kid.as_deref()).ok_or(Invalid::Signature)?.clone();
    Ok(Verification::External(ExternalCheck {
        alg: h.alg,
        jwk,
        signing_input: format!("{header}.{payload}").into_bytes(),
        signature: URL_SAFE_NO_PAD.decode(signature).map_err(|_| Invalid::Malformed)?,
        payload: URL_SAFE_NO_PAD.decode(payload).map_err(|_| Invalid::Malformed)?,
    }))
}
