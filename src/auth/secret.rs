//! Secrets: constant-time comparison and password hashes.
//!
//! Passwords are stored as `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>` (make one with
//! `npm run hash-password`). The iteration count is part of the hash, so hashes of any count
//! keep verifying when the default changes. Verification costs the same for an unknown user as
//! for a wrong password, and compares in constant time, so neither timing nor answers tell
//! them apart.
//!
//! The derivation itself is the host's where it has a faster one (the Worker's WebCrypto, see
//! `Registry::with_password_derivation`); [`derive`] is the same function in wasm.

use sha2::Sha256;

/// Equality of two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box keeps the optimiser from turning the loop back into an early exit.
    std::hint::black_box(diff) == 0
}

/// A stored password hash.
#[derive(Debug, Clone, PartialEq)]
pub struct PasswordHash {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

/// Iterations of the hash an unknown user is checked against, so that it costs what a real
/// user's check costs: `npm run hash-password`'s default, the most workerd's WebCrypto derives
/// (OWASP's password storage cheat sheet asks 600,000 of PBKDF2-HMAC-SHA256, docs/access-control.md).
pub const DEFAULT_ITERATIONS: u32 = 100_000;

impl PasswordHash {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('$');
        if parts.next()? != "pbkdf2-sha256" {
            return None;
        }
        let iterations = parts.next()?.parse().ok().filter(|&i| i > 0)?;
        let salt = hex::decode(parts.next()?).ok()?;
        let hash = hex::decode(parts.next()?).ok()?;
        if parts.next().is_some() || hash.len() != 32 || salt.is_empty() {
            return None;
        }
        Some(Self { iterations, salt, hash })
    }

    pub fn new(password: &str, salt: &[u8], iterations: u32) -> Self {
        Self { iterations, salt: salt.to_vec(), hash: derive(password.as_bytes(), salt, iterations).to_vec() }
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// Whether `derived` (PBKDF2 of a password with this hash's salt and iterations) is this
    /// hash, in constant time.
    pub fn matches(&self, derived: &[u8]) -> bool {
        constant_time_eq(derived, &self.hash)
    }

    /// Derives in wasm and compares.
    pub fn verify(&self, password: &str) -> bool {
        self.matches(&derive(password.as_bytes(), &self.salt, self.iterations))
    }

    /// The stand-in checked for unknown users: verifying against it costs one derivation, as
    /// for a real user (building it costs none), and never succeeds in practice.
    pub fn decoy() -> Self {
        Self { iterations: DEFAULT_ITERATIONS, salt: b"wharf-decoy-salt".to_vec(), hash: vec![0; 32] }
    }
}

impl std::fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (salt, hash) = (hex::encode(&self.salt), hex::encode(&self.hash));
        write!(f, "pbkdf2-sha256${}${salt}${hash}", self.iterations)
    }
}

/// PBKDF2-HMAC-SHA256 (RFC 8018 §5.2) with a 32-byte output.
pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = PasswordHash::new("s3cret", b"salt", 1000);
        assert!(h.verify("s3cret"));
        assert!(!h.verify("s3cret "));
        assert!(!h.verify(""));
        let round = PasswordHash::parse(&h.to_string()).unwrap();
        assert_eq!(round, h);
        assert!(round.verify("s3cret"));
    }

    #[test]
    fn pbkdf2_matches_a_known_vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1, 64), first 32 bytes.
        let h = PasswordHash::new("passwd", b"salt", 1);
        assert_eq!(hex::encode(&h.hash), "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc");
    }

    #[test]
    fn the_decoy_costs_as_much_as_a_real_hash_and_matches_nothing() {
        let decoy = PasswordHash::decoy();
        assert_eq!(decoy.iterations, DEFAULT_ITERATIONS);
        assert!(!decoy.verify(""));
        assert!(!decoy.verify("password"));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for s in ["", "pbkdf2-sha256$0$00$00", "bcrypt$1$00$00", "pbkdf2-sha256$10$zz$00", "pbkdf2-sha256$10$00$0011"] {
            assert!(PasswordHash::parse(s).is_none(), "{s}");
        }
    }
}
