//! Access control: who the client is (Basic credentials, a Bearer token, or nobody) and what it
//! may do, by the configured rules; the token endpoint of the Docker token flow.
//!
//! A client without the right credentials gets 401 with a `WWW-Authenticate: Bearer` challenge
//! naming the realm (wharf's own `/token`), the service and the scope it needs, fetches a token
//! there (with Basic credentials, or none for anonymous access) and retries with it. Basic
//! credentials are also accepted on registry requests directly. Valid credentials without the
//! right get 403 DENIED.

pub mod access;
pub mod oidc;
pub mod secret;
pub mod token;

use crate::base::de::Members;
use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::Headers;
use access::{Access, Actions, Rules};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secret::PasswordHash;
use serde::Serialize;
use token::Claims;

/// Access control settings; present when `WHARF_RULES` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub rules: Rules,
    /// `WHARF_USERS` (a secret): `{"user": "<password hash>"}`.
    /// Name and password hash, in the order WHARF_USERS lists them.
    pub users: Vec<(String, PasswordHash)>,
    /// `WHARF_TOKEN_SECRET` (a secret): the HMAC key of issued tokens.
    pub token_key: Vec<u8>,
    /// `WHARF_TOKEN_TTL_SECONDS`: lifetime of issued tokens. Default 300.
    pub token_ttl: u64,
    /// `WHARF_SERVICE`: the `service` of challenges and tokens. Default "wharf".
    pub service: String,
    /// `WHARF_REALM`: the token endpoint's absolute URL, when not `<request origin>/token`
    /// (behind a proxy that rewrites hosts).
    pub realm: Option<String>,
    /// `WHARF_TOKEN_ISSUER` + `WHARF_TOKEN_JWKS`: an external issuer whose ES256/RS256 tokens
    /// are accepted besides wharf's own.
    pub issuer: Option<token::Issuer>,
    /// `WHARF_OIDC_ISSUERS`: issuers whose ID tokens are accepted as Basic passwords (see
    /// `oidc`).
    pub oidc: oidc::OidcIssuers,
}

impl AuthConfig {
    /// Reads the auth variables through `var`; `Ok(None)` when `WHARF_RULES` is unset.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let Some(rules) = var("WHARF_RULES").filter(|r| !r.trim().is_empty()) else { return Ok(None) };
        let rules = Rules::parse(&rules)?;
        let users = match var("WHARF_USERS").filter(|u| !u.trim().is_empty()) {
            None => Vec::new(),
            Some(json) => {
                serde_json::from_str::<Members<String>>(&json)
                    .map_err(|e| format!("WHARF_USERS: expected an object of user names to password hashes: {e}"))?
                    .0
            }
        };
        let users = users
            .into_iter()
            .map(|(u, h)| {
                PasswordHash::parse(&h).map(|h| (u.clone(), h)).ok_or(format!("WHARF_USERS: bad hash for \"{u}\""))
            })
            .collect::<Result<_, _>>()?;
        let token_key = var("WHARF_TOKEN_SECRET").unwrap_or_default().into_bytes();
        if token_key.len() < 32 {
            return Err("WHARF_TOKEN_SECRET: needed with WHARF_RULES, at least 32 bytes".into());
        }
        let token_ttl = match var("WHARF_TOKEN_TTL_SECONDS") {
            None => 300,
            Some(v) => v.trim().parse().ok().filter(|&t| t > 0).ok_or("WHARF_TOKEN_TTL_SECONDS: a positive number")?,
        };
        let service = var("WHARF_SERVICE").filter(|s| !s.is_empty()).unwrap_or_else(|| "wharf".into());
        Ok(Some(Self {
            rules,
            users,
            token_key,
            token_ttl,
            service,
            realm: var("WHARF_REALM").filter(|r| !r.is_empty()),
            issuer: match (var("WHARF_TOKEN_ISSUER").filter(|i| !i.is_empty()), var("WHARF_TOKEN_JWKS")) {
                (None, _) => None,
                (Some(name), Some(jwks)) => Some(token::Issuer::parse(name, &jwks)?),
                (Some(_), None) => return Err("WHARF_TOKEN_ISSUER needs WHARF_TOKEN_JWKS".into()),
            },
            oidc: oidc::OidcIssuers::parse(&var("WHARF_OIDC_ISSUERS").unwrap_or_default())?,
        }))
    }
}

/// The outcome of reading credentials: an identity, Basic credentials whose password the host
/// must derive first (see [`AuthConfig::finish_password`]), or a token of the external issuer
/// whose signature the host must check first (see [`AuthConfig::finish_external`]).
#[derive(Debug)]
pub enum Identified {
    Ready(Identity),
    Password(PasswordCheck),
    External(token::ExternalCheck),
    /// An ID token of `WHARF_OIDC_ISSUERS` given as a Basic password: its issuer's keys and
    /// the host's check of its signature come first (see [`AuthConfig::finish_oidc`]).
    Oidc(oidc::OidcToken),
}

/// Basic credentials to check: the password is to be derived with `hash`'s salt and
/// iterations and compared with it. For an unknown user `hash` is the decoy, so that the
/// check costs the same.
pub struct PasswordCheck {
    pub user: String,
    pub password: String,
    pub hash: PasswordHash,
    known: bool,
}

/// Never prints the password.
impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCheck").field("user", &self.user).field("known", &self.known).finish_non_exhaustive()
    }
}

impl PasswordCheck {
    /// Whether the user exists: only their credentials may be remembered once verified.
    pub fn known(&self) -> bool {
        self.known
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    /// Checked Basic credentials.
    User(String),
    /// A valid token.
    Token(Claims),
    /// A verified ID token of `WHARF_OIDC_ISSUERS`: its claims.
    Oidc(serde_json::Map<String, serde_json::Value>),
}

impl Identity {
    /// The user the rules apply to.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User(u) => Some(u),
            Identity::Token(c) => Some(c.sub.as_str()).filter(|s| !s.is_empty()),
            // The rules' users are wharf's own: a workload is none of them.
            Identity::Oidc(_) => None,
        }
    }
}

fn refused(why: token::Invalid) -> RegistryError {
    crate::base::log::error(&format!("refused token: {why:?}"));
    unauthorized("invalid or expired token")
}

fn unauthorized(message: &'static str) -> RegistryError {
    RegistryError::new(ErrorCode::Unauthorized).with_message(message)
}

impl AuthConfig {
    /// Reads the `Authorization` header. Credentials that are present but wrong are an error,
    /// never a fall-back to anonymous; the error is the same for an unknown user and a wrong
    /// password, and both cost one password hash.
    pub fn identify(&self, headers: &Headers, now: u64) -> Result<Identified, RegistryError> {
        let Some(value) = headers.get("authorization").filter(|v| !v.trim().is_empty()) else {
            return Ok(Identified::Ready(Identity::Anonymous));
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, password) =
                basic_credentials(rest.trim()).ok_or_else(|| unauthorized("malformed credentials"))?;
            // Any user name: `docker login -u oidc --password-stdin` with the workload's token.
            if let Some(token) = oidc::read_token(&password, &self.oidc) {
                return Ok(Identified::Oidc(token));
            }
            let known = self.users.iter().find(|(name, _)| *name == user).map(|(_, hash)| hash.clone());
            return Ok(Identified::Password(PasswordCheck {
                known: known.is_some(),
                // Same work as for a real user, so timing does not reveal who exists.
                hash: known.unwrap_or_else(PasswordHash::decoy),
                user,
                password,
            }));
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return match token::verify_any(rest.trim(), &self.token_key, self.issuer.as_ref(), &self.service, now) {
                Ok(token::Verification::Verified(claims)) => Ok(Identified::Ready(Identity::Token(claims))),
                Ok(token::Verification::External(check)) => Ok(Identified::External(check)),
                Err(why) => Err(refused(why)),
            };
        }
        Err(unauthorized("unsupported authorization scheme"))
    }

    /// The identity of an external token once the host has checked its signature.
    pub fn finish_external(
        &self,
        check: token::ExternalCheck,
        signature_holds: bool,
        now: u64,
    ) -> Result<Identity, RegistryError> {
        let issuer = self.issuer.as_ref().map(|i| i.name.as_str()).unwrap_or_default();
        check.finish(signature_holds, issuer, &self.service, now).map(Identity::Token).map_err(refused)
    }

    /// The identity of an OIDC token once the host has checked its signature with its issuer's
    /// key.
    pub fn finish_oidc(
        &self,
        token: oidc::OidcToken,
        signature_holds: bool,
        now: u64,
    ) -> Result<Identity, RegistryError> {
        let issuer = self.oidc.of(&token).ok_or_else(|| refused(token::Invalid::Audience))?.clone();
        token.finish(signature_holds, &issuer, now).map(Identity::Oidc).map_err(refused)
    }

    /// The identity of Basic credentials once the host has derived the password (`derived`:
    /// PBKDF2 with the check's salt and iterations). The answer is the same for an unknown user
    /// and a wrong password.
    pub fn finish_password(&self, check: PasswordCheck, derived: &[u8]) -> Result<Identity, RegistryError> {
        // Both sides evaluated, so that a known user's comparison costs what an unknown one's does.
        let matches = check.hash.matches(derived);
        if check.known & matches {
            Ok(Identity::User(check.user))
        } else {
            Err(unauthorized("invalid username or password"))
        }
    }

    /// What `identity` may do to `repository`: a token's grant, or the rules for the user.
    pub fn permitted(&self, identity: &Identity, repository: &str) -> Actions {
        match identity {
            Identity::Token(claims) => claims
                .access
                .iter()
                .filter(|a| a.repository_class().is_some() && a.name == repository)
                .fold(Actions::NONE, |acc, a| acc.union(a.actions())),
            Identity::Oidc(claims) => self.rules.allowed_oidc(claims, repository),
            other => self.rules.allowed(other.user(), repository),
        }
    }

    /// Refuses `needed` on `repository` unless permitted: 401 with a challenge when the client
    /// can do better by authenticating (no credentials, or a token lacking the scope its user
    /// is allowed), else 403.
    pub fn authorize(
        &self,
        identity: &Identity,
        repository: &str,
        needed: Actions,
        origin: &str,
    ) -> Result<(), RegistryError> {
        if self.permitted(identity, repository).contains(needed) {
            return Ok(());
        }
        // Anonymous callers (with or without an anonymous token) may still sign in; an external
        // issuer decides its own grants, so its tokens lacking a scope are sent back for one.
        let could = match (identity, identity.user()) {
            // A verified workload gets what its claims are granted, no more.
            (Identity::Oidc(_), _) => false,
            (_, None) => true,
            (Identity::Token(c), _) if c.iss != token::ISSUER => true,
            (Identity::Token(_), Some(user)) => self.rules.allowed(Some(user), repository).contains(needed),
            (_, Some(_)) => false,
        };
        if !could {
            return Err(RegistryError::new(ErrorCode::Denied));
        }
        // Pushing needs pulling too (clients check blobs before uploading them).
        let scope_actions = if needed.contains(Actions::PUSH) { needed.union(Actions::PULL) } else { needed };
        let scope = format!("repository:{repository}:{}", scope_actions.names().join(","));
        Err(self.challenge(unauthorized("authentication required"), origin, Some(&scope)))
    }

    /// Adds the `WWW-Authenticate` challenge to a 401.
    pub fn challenge(&self, e: RegistryError, origin: &str, scope: Option<&str>) -> RegistryError {
        let realm = self.realm.clone().unwrap_or_else(|| format!("{origin}/token"));
        let mut value = format!("Bearer realm=\"{realm}\",service=\"{}\"", self.service);
        if let Some(s) = scope {
            value.push_str(&format!(",scope=\"{s}\""));
        }
        e.with_header("WWW-Authenticate", value)
    }

    /// The token endpoint: a token granting each requested scope as far as the rules allow.
    pub fn issue_token(&self, identity: &Identity, scopes: &[&str], now: u64) -> Result<TokenResponse, RegistryError> {
        let access = scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter_map(Access::parse_scope)
            .filter(|a| a.repository_class().is_some())
            .filter_map(|mut a| {
                let allowed = match identity {
                    Identity::Oidc(claims) => self.rules.allowed_oidc(claims, &a.name),
                    other => self.rules.allowed(other.user(), &a.name),
                };
                let granted = a.actions().intersect(allowed);
                a.actions = granted.names();
                (!granted.is_empty()).then_some(a)
            })
            .collect();
        let claims = Claims {
            iss: token::ISSUER.into(),
            sub: identity.user().unwrap_or_default().into(),
            aud: self.service.clone(),
            exp: now + self.token_ttl,
            nbf: now,
            iat: now,
            access,
        };
        let jwt = token::sign(&claims, &self.token_key);
        Ok(TokenResponse {
            token: jwt.clone(),
            access_token: jwt,
            expires_in: self.token_ttl,
            issued_at: crate::base::time::rfc3339(now),
        })
    }
}

/// The token endpoint's answer (the Docker token specification's, with OAuth2's `access_token`
/// beside `token` for the clients that read that one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenResponse {
    pub token: String,
    pub access_token: String,
    /// Seconds.
    pub expires_in: u64,
    /// RFC 3339.
    pub issued_at: String,
}

/// `base64(user:password)`, padded (RFC 7617 §2).
fn basic_credentials(encoded: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config() -> AuthConfig {
        let vars = BTreeMap::from([
            ("WHARF_RULES", r#"[{"repositories":"team/*","users":{"alice":["pull","push"]},"anonymous":["pull"]},{"repositories":"private/*","users":{"alice":["pull"]}}]"#.to_owned()),
            ("WHARF_USERS", format!(r#"{{"alice":"{}"}}"#, PasswordHash::new("pw", b"salt", 10))),
            ("WHARF_TOKEN_SECRET", "k".repeat(32)),
        ]);
        AuthConfig::from_vars(&|n| vars.get(n).cloned()).unwrap().unwrap()
    }

    fn basic(user: &str, pw: &str) -> Headers {
        Headers::new().with("Authorization", &format!("Basic {}", STANDARD.encode(format!("{user}:{pw}"))))
    }

    /// Basic credentials checked as the registry does, deriving in wasm.
    fn password(c: &AuthConfig, user: &str, pw: &str) -> Result<Identity, RegistryError> {
        match c.identify(&basic(user, pw), 0)? {
            Identified::Password(check) => {
                let derived = secret::derive(check.password.as_bytes(), check.hash.salt(), check.hash.iterations());
                c.finish_password(check, &derived)
            }
            other => panic!("Basic credentials identified as {other:?}"),
        }
    }

    #[test]
    fn identities_come_from_the_authorization_header() {
        let c = config();
        assert!(matches!(c.identify(&Headers::new(), 0), Ok(Identified::Ready(Identity::Anonymous))));
        assert_eq!(password(&c, "alice", "pw").unwrap(), Identity::User("alice".into()));
        let wrong = password(&c, "alice", "nope").unwrap_err();
        let unknown = password(&c, "bob", "pw").unwrap_err();
        assert_eq!((wrong.code, wrong.message()), (unknown.code, unknown.message()), "same answer for both");
        assert_eq!(wrong.status(), 401);
        assert!(c.identify(&Headers::new().with("Authorization", "Digest x"), 0).is_err());
        assert!(c.identify(&Headers::new().with("Authorization", "Basic !!!"), 0).is_err());
        // Standard base64 with its padding, nothing else.
        let unpadded = STANDARD.encode("alice:pw").trim_end_matches('=').to_owned();
        assert_ne!(unpadded, STANDARD.encode("alice:pw"));
        assert!(c.identify(&Headers::new().with("Authorization", &format!("Basic {unpadded}")), 0).is_err());
    }

    #[test]
    fn an_unknown_user_is_checked_against_the_decoy_at_the_default_cost() {
        let c = config();
        let Ok(Identified::Password(check)) = c.identify(&basic("bob", "pw"), 0) else {
            panic!("not a password check")
        };
        assert!(!check.known());
        assert_eq!(check.hash.iterations(), secret::DEFAULT_ITERATIONS);
        let Ok(Identified::Password(check)) = c.identify(&basic("alice", "pw"), 0) else {
            panic!("not a password check")
        };
        assert!(check.known());
        assert_eq!(check.hash.iterations(), 10, "a user's own hash, with its own count");
    }

    #[test]
    fn the_token_answer_is_written_in_its_order() {
        let c = config();
        let t = c.issue_token(&Identity::Anonymous, &[], 1000).unwrap();
        let text = String::from_utf8(serde_json::to_vec(&t).unwrap()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"token":"{0}","access_token":"{0}","expires_in":300,"issued_at":"1970-01-01T00:16:40Z"}}"#,
                t.token
            )
        );
    }

    #[test]
    fn tokens_grant_the_intersection_of_request_and_rules() {
        let c = config();
        let alice = Identity::User("alice".into());
        let t = c
            .issue_token(&alice, &["repository:team/app:pull,push,delete", "repository:private/x:push"], 1000)
            .unwrap();
        let t = serde_json::to_value(t).unwrap();
        let claims = token::verify(t["token"].as_str().unwrap(), &c.token_key, "wharf", 1000).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.access.len(), 1, "nothing granted on private/x for push");
        assert_eq!(claims.access[0].actions, ["pull", "push"]);
        assert_eq!(t["expires_in"].as_u64(), Some(300));
        assert_eq!(t["issued_at"], "1970-01-01T00:16:40Z");
        let id = Identity::Token(claims);
        assert!(c.permitted(&id, "team/app").contains(Actions::PUSH));
        assert_eq!(c.permitted(&id, "team/other"), Actions::NONE, "a token for one repository is not for another");
    }

    #[test]
    fn refusals_are_401_with_a_challenge_or_403() {
        let c = config();
        let origin = "https://r.example";
        let anon = c.authorize(&Identity::Anonymous, "team/app", Actions::PUSH, origin).unwrap_err();
        assert_eq!(anon.status(), 401);
        assert_eq!(
            anon.headers[0].1,
            r#"Bearer realm="https://r.example/token",service="wharf",scope="repository:team/app:pull,push""#
        );
        assert!(c.authorize(&Identity::Anonymous, "team/app", Actions::PULL, origin).is_ok());
        let alice = Identity::User("alice".into());
        assert_eq!(c.authorize(&alice, "private/x", Actions::PUSH, origin).unwrap_err().status(), 403);
        // A token without the scope its user could have: 401, so the client fetches one.
        let t = serde_json::to_value(c.issue_token(&alice, &["repository:team/app:pull"], 0).unwrap()).unwrap();
        let id = Identity::Token(token::verify(t["token"].as_str().unwrap(), &c.token_key, "wharf", 0).unwrap());
        assert_eq!(c.authorize(&id, "team/app", Actions::PUSH, origin).unwrap_err().status(), 401);
        assert_eq!(c.authorize(&id, "private/x", Actions::PUSH, origin).unwrap_err().status(), 403);
    }

    #[test]
    fn configuration_needs_a_long_token_secret_and_valid_users() {
        let base = |extra: &[(&str, &str)]| {
            let mut vars: BTreeMap<&str, String> = BTreeMap::from([("WHARF_RULES", "[]".to_owned())]);
            for (k, v) in extra {
                vars.insert(k, v.to_string());
            }
            AuthConfig::from_vars(&|n| vars.get(n).cloned())
        };
        assert!(base(&[]).is_err());
        assert!(base(&[("WHARF_TOKEN_SECRET", "short")]).is_err());
        let long = "x".repeat(32);
        assert!(base(&[("WHARF_TOKEN_SECRET", &long)]).unwrap().is_some());
        assert!(base(&[("WHARF_TOKEN_SECRET", &long), ("WHARF_USERS", r#"{"a":"plain"}"#)]).is_err());
        let hash = PasswordHash::new("pw", b"salt", 1).to_string();
        let users = |json: String| base(&[("WHARF_TOKEN_SECRET", &long), ("WHARF_USERS", &json)]);
        assert_eq!(users(format!(r#"{{"b":"{hash}","a":"{hash}"}}"#)).unwrap().unwrap().users[0].0, "b");
        assert!(users(format!(r#"{{"a":"{hash}","a":"{hash}"}}"#)).is_err(), "a user twice");
        assert!(users(format!(r#"[["a","{hash}"]]"#)).is_err());
        assert_eq!(AuthConfig::from_vars(&|_| None), Ok(None));
    }
}
