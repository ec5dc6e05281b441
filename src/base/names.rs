//! Newtypes for the identifiers in a registry URL. Each can only hold a valid value: parse,
//! don't validate. The grammars are the distribution-spec v1.1 ones, checked by hand (no regex
//! crate in the wasm).

use crate::base::error::{ErrorCode, RegistryError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fmt;

/// A repository name.
///
/// Grammar (distribution-spec "Pulling manifests"):
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
/// and at most 255 characters (the spec keeps host + name under 256; Distribution rejects
/// longer names with NAME_INVALID).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepositoryName(String);

pub const MAX_NAME_LEN: usize = 255;

/// Longest tag (distribution-spec: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
pub const MAX_TAG_LEN: usize = 128;

impl RepositoryName {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let invalid =
            |why: &str| RegistryError::new(ErrorCode::NameInvalid).with_detail(json!({ "name": s, "reason": why }));
        if s.is_empty() {
            return Err(invalid("empty name"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(invalid("name longer than 255 characters"));
        }
        if !s.split('/').all(valid_component) {
            return Err(invalid("name does not match the repository name grammar"));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One path component: alphanumeric runs joined by exactly one of `.`, `_`, `__` or `-+`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let b = s.as_bytes();
        let head = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let tail = |x: u8| head(x) || x == b'.' || x == b'-';
        if !b.is_empty() && b.len() <= MAX_TAG_LEN && head(b[0]) && b[1..].iter().all(|&x| tail(x)) {
            Ok(Self(s.to_owned()))
        } else {
            Err(RegistryError::new(ErrorCode::TagInvalid).with_detail(json!({ "tag": s })))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The digest algorithms wharf computes and accepts (distribution-spec "Digests": sha256
/// MUST, sha512 MAY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A content digest `algorithm:hex` with a supported algorithm and a lowercase hex encoding of
/// the right length (OCI image-spec "Digests"; go-digest rejects upper case too).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let invalid = || {
            RegistryError::new(ErrorCode::DigestInvalid)
                .with_message("invalid digest")
                .with_detail(json!({ "digest": s }))
        };
        let (alg, hex) = s.split_once(':').ok_or_else(invalid)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid()),
        };
        let lower_hex = |x: u8| x.is_ascii_digit() || (b'a'..=b'f').contains(&x);
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(lower_hex) {
            return Err(invalid());
        }
        Ok(Self { algorithm, hex: hex.to_owned() })
    }

    /// Builds a digest from a finished hash.
    pub fn from_hash(algorithm: Algorithm, bytes: &[u8]) -> Self {
        Self { algorithm, hex: hex::encode(bytes) }
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self::from_hash(Algorithm::Sha256, &sha2::Sha256::digest(bytes))
    }

    /// The digest of `bytes` with this digest's algorithm (to check a manifest body against
    /// a digest reference).
    pub fn recompute(&self, bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        match self.algorithm {
            Algorithm::Sha256 => Self::sha256_of(bytes),
            Algorithm::Sha512 => Self::from_hash(Algorithm::Sha512, &sha2::Sha512::digest(bytes)),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// Stored as their text (the collector's saved progress), and read back only through `parse`.
macro_rules! as_text {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = RegistryError;
            fn try_from(s: String) -> Result<Self, RegistryError> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    )*};
}
as_text!(RepositoryName, Tag, Digest);

/// The `<reference>` of a manifest URL: a digest if it contains `:` (tags cannot), else a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s.contains(':') { Digest::parse(s).map(Reference::Digest) } else { Tag::parse(s).map(Reference::Tag) }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// An upload session id: 32 lowercase hex characters (128 random bits), minted by wharf. Ordered
/// as their keys list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

impl UploadId {
    pub fn random() -> Result<Self, RegistryError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(RegistryError::internal)?;
        Ok(Self(hex::encode(bytes)))
    }
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let ok = s.len() == 32 && s.bytes().all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(RegistryError::new(ErrorCode::BlobUploadUnknown).with_detail(json!({ "upload": s })))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_spec_grammar() {
        let long_ok = "a".repeat(255);
        let too_long = "a".repeat(256);
        let cases: &[(&str, bool)] = &[
            ("library/alpine", true),
            ("a", true),
            ("a/b/c/d", true),
            ("a.b_c__d---e", true),
            ("0", true),
            (&long_ok, true),
            ("", false),
            (&too_long, false),
            ("A", false),
            ("a/", false),
            ("/a", false),
            ("a//b", false),
            ("a..b", false),
            ("a___b", false),
            ("a._b", false),
            ("-a", false),
            ("a-", false),
            ("a b", false),
            ("a:b", false),
            ("é", false),
        ];
        for &(name, ok) in cases {
            assert_eq!(RepositoryName::parse(name).is_ok(), ok, "{name:?}");
        }
        assert_eq!(RepositoryName::parse("A").unwrap_err().code, ErrorCode::NameInvalid);
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        let max = "a".repeat(128);
        let over = "a".repeat(129);
        let cases: &[(&str, bool)] = &[
            ("latest", true),
            ("_x", true),
            ("V1.2-rc_3", true),
            (&max, true),
            ("", false),
            (&over, false),
            (".x", false),
            ("-x", false),
            ("a/b", false),
            ("a+b", false),
        ];
        for &(tag, ok) in cases {
            assert_eq!(Tag::parse(tag).is_ok(), ok, "{tag:?}");
        }
        assert_eq!(Tag::parse("-x").unwrap_err().code, ErrorCode::TagInvalid);
    }

    #[test]
    fn digests_need_a_supported_algorithm_and_lowercase_hex_of_the_right_length() {
        let h64 = "a".repeat(64);
        let h128 = "0".repeat(128);
        let cases = [
            (format!("sha256:{h64}"), true),
            (format!("sha512:{h128}"), true),
            (format!("sha256:{}", "A".repeat(64)), false),
            (format!("sha256:{}", "a".repeat(63)), false),
            (format!("sha512:{h64}"), false),
            (format!("md5:{h64}"), false),
            (h64.clone(), false),
            ("sha256:".to_string(), false),
            (format!("sha256:{}g", "a".repeat(63)), false),
        ];
        for (d, ok) in cases {
            assert_eq!(Digest::parse(&d).is_ok(), ok, "{d:?}");
        }
    }

    #[test]
    fn digest_round_trips_and_hashes() {
        let d = Digest::sha256_of(b"");
        assert_eq!(d.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn references_are_digests_when_they_contain_a_colon() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let d = format!("sha256:{}", "b".repeat(64));
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert_eq!(Reference::parse("sha256:zz").unwrap_err().code, ErrorCode::DigestInvalid);
        assert_eq!(Reference::parse("a/b").unwrap_err().code, ErrorCode::TagInvalid);
    }

    #[test]
    fn upload_ids_are_random_hex() {
        let a = UploadId::random().unwrap();
        let b = UploadId::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(UploadId::parse(a.as_str()).unwrap(), a);
        assert!(UploadId::parse("../etc").is_err());
    }
}
