//! Base64 (RFC 4648): the standard alphabet with padding, for HTTP Basic credentials (RFC 7617),
//! and the URL-safe one without, for JWTs (RFC 7515 §2). A few lines instead of a crate whose
//! generic engines cost the wasm about 6 KB.
//!
//! Decoding is strict, as the base64 crate's default engines are: only the alphabet, padding
//! exactly where the length calls for it (standard) or none at all (URL-safe), and no bits set
//! after the last whole byte, so that every byte string has exactly one accepted encoding.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// `+` and `/`, padded with `=`.
    Standard,
    /// `-` and `_`, unpadded.
    UrlSafe,
}

impl Alphabet {
    fn symbols(self) -> &'static [u8; 64] {
        match self {
            Alphabet::Standard => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            Alphabet::UrlSafe => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        }
    }

    fn value(self, symbol: u8) -> Option<u32> {
        self.symbols().iter().position(|&s| s == symbol).map(|v| v as u32)
    }
}

pub fn encode(alphabet: Alphabet, bytes: impl AsRef<[u8]>) -> String {
    let symbols = alphabet.symbols();
    let mut out = String::new();
    for group in bytes.as_ref().chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        // 3 bytes make 4 symbols; 2 make 3; 1 makes 2.
        for i in 0..=group.len() {
            out.push(symbols[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if alphabet == Alphabet::Standard {
            out.push_str(&"=="[group.len() - 1..]);
        }
    }
    out
}

pub fn decode(alphabet: Alphabet, text: &str) -> Option<Vec<u8>> {
    let mut text = text.as_bytes();
    if alphabet == Alphabet::Standard {
        if !text.len().is_multiple_of(4) {
            return None;
        }
        let padding = text.iter().rev().take(2).take_while(|&&b| b == b'=').count();
        text = &text[..text.len() - padding];
    }
    // A group of 4 symbols is 3 bytes; a last group of 1 symbol cannot be.
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for group in text.chunks(4) {
        let mut n = 0u32;
        for (i, &symbol) in group.iter().enumerate() {
            n |= alphabet.value(symbol)? << (18 - 6 * i);
        }
        let bytes = group.len() - 1;
        // Bits beyond the last whole byte must be zero.
        if n & ((1 << (24 - 8 * bytes)) - 1) != 0 {
            return None;
        }
        out.extend((0..bytes).map(|i| (n >> (16 - 8 * i)) as u8));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Alphabet::*;

    #[test]
    fn rfc_4648_test_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(encode(Standard, plain), encoded);
            assert_eq!(decode(Standard, encoded).as_deref(), Some(plain.as_bytes()));
            let unpadded = encoded.trim_end_matches('=');
            assert_eq!(encode(UrlSafe, plain), unpadded);
            assert_eq!(decode(UrlSafe, unpadded).as_deref(), Some(plain.as_bytes()));
        }
    }

    #[test]
    fn alphabets_differ_in_two_symbols() {
        let bytes = [0xfb, 0xff, 0xbf];
        assert_eq!(encode(Standard, bytes), "+/+/");
        assert_eq!(encode(UrlSafe, bytes), "-_-_");
        assert_eq!(decode(UrlSafe, "+/+/"), None);
        assert_eq!(decode(Standard, "-_-_"), None);
    }

    #[test]
    fn every_byte_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        for alphabet in [Standard, UrlSafe] {
            for len in 0..bytes.len() {
                assert_eq!(decode(alphabet, &encode(alphabet, &bytes[..len])).as_deref(), Some(&bytes[..len]));
            }
        }
    }

    #[test]
    fn refuses_what_is_not_the_one_encoding() {
        for bad in ["Zg", "Zg=", "Zg===", "Z===", "Zh==", "Zm9=", "Zm8=Zm8=", "Zm 9v", "Zm9v\n", "=Zm9", "Z"] {
            assert_eq!(decode(Standard, bad), None, "{bad}");
        }
        for bad in ["Zg==", "Zh", "Zm9", "Z", "Zm9v=", "a.b"] {
            assert_eq!(decode(UrlSafe, bad), None, "{bad}");
        }
    }
}
