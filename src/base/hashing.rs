//! Incremental digests whose state survives between requests.
//!
//! An upload arrives over several requests; verifying its digest at the end without reading
//! the bytes back means carrying the hash state from one request to the next. sha2's hashers
//! serialise their internal state (`SerializableState`: the compression state, the block
//! buffer and the length), which is all a resumed hash needs.

use crate::base::names::{Algorithm, Digest};
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Kept out of its callers: inlined into the upload's large async state machine, the
    /// hashing ran a third slower in V8 (measured with perf under wrangler dev).
    #[inline(never)]
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_hash(Algorithm::Sha256, &h.finalize()),
            Hasher::Sha512(h) => Digest::from_hash(Algorithm::Sha512, &h.finalize()),
        }
    }

    /// The state as text: `<algorithm>:<hex of the serialised state>`.
    pub fn save(&self) -> String {
        let state = match self {
            Hasher::Sha256(h) => hex::encode(h.serialize()),
            Hasher::Sha512(h) => hex::encode(h.serialize()),
        };
        format!("{}:{state}", self.algorithm().as_str())
    }

    /// Restores a state written by [`Hasher::save`]; `None` if it is not one.
    pub fn restore(saved: &str) -> Option<Self> {
        let (alg, state) = saved.split_once(':')?;
        let bytes = hex::decode(state).ok()?;
        match alg {
            "sha256" => Some(Hasher::Sha256(Sha256::deserialize(bytes.as_slice().try_into().ok()?).ok()?)),
            "sha512" => Some(Hasher::Sha512(Sha512::deserialize(bytes.as_slice().try_into().ok()?).ok()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_saved_and_restored_mid_stream_equals_the_one_shot_digest() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for cut in [0, 1, 63, 64, 65, 127, 128, 129, 5000, 10_000] {
                let mut h = Hasher::new(alg);
                h.update(&data[..cut]);
                let mut resumed = Hasher::restore(&h.save()).unwrap();
                resumed.update(&data[cut..]);
                let expected = Digest::parse(&format!(
                    "{}:{}",
                    alg.as_str(),
                    "0".repeat(if alg == Algorithm::Sha256 { 64 } else { 128 })
                ))
                .unwrap()
                .recompute(&data);
                assert_eq!(resumed.finish(), expected, "{alg:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn garbage_states_are_refused() {
        assert!(Hasher::restore("sha256:zz").is_none());
        assert!(Hasher::restore("sha256:00").is_none());
        assert!(Hasher::restore("md5:00").is_none());
        assert!(Hasher::restore("nothing").is_none());
    }
}
