//! Bearer tokens: JWTs (RFC 7519) signed with HMAC-SHA256 under `WHARF_TOKEN_SECRET`, carrying
//! the Docker token specification's `access` claim.

use super::access::Access;
use super::secret::constant_time_eq;
use crate::json::Json;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The issuer wharf writes into its tokens.
pub const ISSUER: &str = "wharf";

#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub iss: String,
    /// The user, empty for anonymous tokens.
    pub sub: String,
    /// The service (`WHARF_SERVICE`) the token is for.
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    /// May be absent.
    pub access: Vec<Access>,
}

impl Claims {
    pub fn to_json(&self) -> Json {
        Json::object([
            ("iss", (&self.iss).into()),
            ("sub", (&self.sub).into()),
            ("aud", (&self.aud).into()),
            ("exp", self.exp.into()),
            ("nbf", self.nbf.into()),
            ("iat", self.iat.into()),
            ("access", Json::Array(self.access.iter().map(Access::to_json).collect())),
        ])
    }

    /// The claims of a payload; `None` when one is missing or of another type.
    pub fn from_json(v: &Json) -> Option<Self> {
        let access = match v.present("access") {
            None => Vec::new(),
            Some(a) => a.as_array()?.iter().map(Access::from_json).collect::<Option<_>>()?,
        };
        Some(Self {
            iss: v["iss"].as_str()?.to_owned(),
            sub: v["sub"].as_str()?.to_owned(),
            aud: v["aud"].as_str()?.to_owned(),
            exp: v["exp"].as_u64()?,
            nbf: v["nbf"].as_u64()?,
            iat: v["iat"].as_u64()?,
            access,
        })
    }
}

/// A base64url segment of a token, decoded and read as JSON.
fn segment(encoded: &str) -> Result<Json, Invalid> {
    Json::parse(&URL_SAFE_NO_PAD.decode(encoded).map_err(|_| Invalid::Malformed)?).map_err(|_| Invalid::Malformed)
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
    let payload = URL_SAFE_NO_PAD.encode(claims.to_json().to_vec());
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
    if segment(header)?["alg"] != "HS256" {
        return Err(Invalid::Malformed);
    }
    let claims = Claims::from_json(&segment(payload)?).ok_or(Invalid::Malformed)?;
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
        let payload = URL_SAFE_NO_PAD.encode(claims(400).to_json().to_vec());
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert!(verify(&format!("{header}.{payload}."), b"key", "wharf", 200).is_err());
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
    /// Its public keys as JWKs (EC P-256 for ES256, RSA for RS256).
    pub keys: Vec<Json>,
}

impl Issuer {
    pub fn parse(name: String, jwks: &str) -> Result<Self, String> {
        let set = Json::parse(jwks.as_bytes()).map_err(|e| format!("WHARF_TOKEN_JWKS: {e}"))?;
        let keys = set["keys"].as_array().ok_or("WHARF_TOKEN_JWKS: expected a JWK set, {\"keys\": [...]}")?;
        if keys.is_empty() {
            return Err("WHARF_TOKEN_JWKS: no keys".into());
        }
        Ok(Self { name, keys: keys.to_vec() })
    }

    /// The key for a token's `alg` and `kid`: the matching `kid`, or the only key of the right
    /// type when the token names none.
    fn key(&self, alg: &str, kid: Option<&str>) -> Option<&Json> {
        let kty = match alg {
            "ES256" => "EC",
            "RS256" => "RSA",
            _ => return None,
        };
        let mut fitting = self.keys.iter().filter(|k| k["kty"] == kty);
        match kid {
            Some(kid) => fitting.find(|k| k["kid"] == kid),
            None => {
                let first = fitting.next();
                if fitting.next().is_some() { None } else { first }
            }
        }
    }
}

/// A token signed by the external issuer, whose signature the host checks (WebCrypto on
/// Workers) before [`ExternalCheck::finish`] reads its claims.
#[derive(Debug, Clone)]
pub struct ExternalCheck {
    pub alg: String,
    pub jwk: Json,
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
        let mut value = Json::parse(&self.payload).map_err(|_| Invalid::Malformed)?;
        if value["iss"] != issuer {
            return Err(Invalid::Audience);
        }
        let aud_ok = match &value["aud"] {
            Json::String(a) => a == service,
            Json::Array(list) => list.iter().any(|a| *a == service),
            _ => false,
        };
        if !aud_ok {
            return Err(Invalid::Audience);
        }
        // What other issuers may leave out, filled in as wharf's own claims have it.
        value.set("aud", service.into());
        for field in ["nbf", "iat"] {
            if value.present(field).is_none() {
                value.set(field, 0u64.into());
            }
        }
        if value.present("sub").is_none() {
            value.set("sub", "".into());
        }
        in_period(Claims::from_json(&value).ok_or(Invalid::Malformed)?, now)
    }
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
    let h = segment(header)?;
    let alg = h["alg"].as_str().ok_or(Invalid::Malformed)?;
    let kid = match h.present("kid") {
        Some(kid) => Some(kid.as_str().ok_or(Invalid::Malformed)?),
        None => None,
    };
    if alg == "HS256" {
        return verify(token, key, service, now).map(Verification::Verified);
    }
    let issuer = issuer.ok_or(Invalid::Malformed)?;
    let jwk = issuer.key(alg, kid).ok_or(Invalid::Signature)?.clone();
    Ok(Verification::External(ExternalCheck {
        alg: alg.to_owned(),
        jwk,
        signing_input: format!("{header}.{payload}").into_bytes(),
        signature: URL_SAFE_NO_PAD.decode(signature).map_err(|_| Invalid::Malformed)?,
        payload: URL_SAFE_NO_PAD.decode(payload).map_err(|_| Invalid::Malformed)?,
    }))
}
