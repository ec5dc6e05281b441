//! JSON (RFC 8259), read and written by wharf itself. serde's generic machinery and the code it
//! derives for each type cost about a fifth of the Worker's wasm (README, "Size"); the
//! documents wharf reads are few and small, so it reads them into a [`Json`] tree and picks
//! fields out by hand, and builds its answers the same way.
//!
//! Reading is strict: one value and nothing after it but whitespace, valid UTF-8, no control
//! characters or lone surrogates in strings, and no key twice in an object. RFC 8259 §4 leaves
//! duplicate names to the implementation and I-JSON (RFC 7493 §2.3) forbids them: refusing them
//! means that no two parsers can disagree about what a manifest or a token says.

use std::fmt;

/// Deepest nesting of arrays and objects read, so that a hostile document cannot exhaust the
/// stack of the recursive reader.
const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number's literal text, checked against the JSON grammar: kept as written so that no
    /// integer is rounded through a float. Any magnitude is read (`1e400` too, which serde_json
    /// refuses): like Go's decoder skipping a field it ignores; the typed accessors refuse what
    /// does not fit.
    Number(String),
    String(String),
    Array(Vec<Json>),
    /// Members in document order.
    Object(Vec<(String, Json)>),
}

static NULL: Json = Json::Null;

impl Json {
    /// Reads one JSON text.
    pub fn parse(bytes: &[u8]) -> Result<Json, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 at byte {}", e.valid_up_to()))?;
        let mut reader = Reader { text: text.as_bytes(), at: 0 };
        let value = reader.value(0)?;
        reader.space();
        match reader.at == reader.text.len() {
            true => Ok(value),
            false => Err(reader.error("trailing characters")),
        }
    }

    /// An object from its members.
    pub fn object<const N: usize>(members: [(&str, Json); N]) -> Json {
        Json::Object(members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// An object from the members that are present: a `None` leaves its member out (absent,
    /// not null), as optional fields of the formats wharf writes are.
    /// (A vector, not an array: one instantiation for every caller, which the wasm's size notices.)
    pub fn sparse(members: Vec<(&str, Option<Json>)>) -> Json {
        Json::Object(members.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))).collect())
    }

    /// A member of an object; `None` for a missing member and for anything but an object.
    pub fn get(&self, name: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A member that is present and not null.
    pub fn present(&self, name: &str) -> Option<&Json> {
        self.get(name).filter(|v| !v.is_null())
    }

    /// Sets a member of an object, replacing one of the same name; nothing for other values.
    pub fn set(&mut self, name: &str, value: Json) {
        if let Json::Object(members) = self {
            match members.iter_mut().find(|(k, _)| k == name) {
                Some((_, v)) => *v = value,
                None => members.push((name.to_owned(), value)),
            }
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A number written as a non-negative integer (no fraction, no exponent), as Go's decoder
    /// takes into an unsigned field.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    /// A number written as an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    /// Any number, as a float (JWT times may have fractions, RFC 7519 §2).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Object(members) => Some(members),
            _ => None,
        }
    }

    /// An object of strings (annotations, R2 custom metadata).
    pub fn from_strings<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Json {
        Json::Object(pairs.into_iter().map(|(k, v)| (k.clone(), v.into())).collect())
    }

    /// An object whose members are all strings, as (name, value) pairs in document order
    /// (names are unique: the reader refuses duplicates); `None` for anything else.
    pub fn to_strings(&self) -> Option<Vec<(String, String)>> {
        self.as_object()?.iter().map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect()
    }

    /// The compact text, as bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n),
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(name, out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// `json["name"]`: the member, or null when there is none (as serde_json's `Value` does).
impl std::ops::Index<&str> for Json {
    type Output = Json;
    fn index(&self, name: &str) -> &Json {
        self.get(name).unwrap_or(&NULL)
    }
}

/// `json[i]`: the item, or null past the end or for anything but an array.
impl std::ops::Index<usize> for Json {
    type Output = Json;
    fn index(&self, i: usize) -> &Json {
        self.as_array().and_then(|items| items.get(i)).unwrap_or(&NULL)
    }
}

impl PartialEq<&str> for Json {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write(&mut out);
        f.write_str(&out)
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::String(s.to_owned())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::String(s)
    }
}

impl From<&String> for Json {
    fn from(s: &String) -> Json {
        Json::String(s.clone())
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}

macro_rules! from_integer {
    ($($t:ty)*) => {$(
        impl From<$t> for Json {
            fn from(n: $t) -> Json {
                Json::Number(n.to_string())
            }
        }
    )*};
}
from_integer!(u16 u32 u64 usize i32 i64);

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(o: Option<T>) -> Json {
        o.map_or(Json::Null, Into::into)
    }
}

impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(items: Vec<T>) -> Json {
        Json::Array(items.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Json> + Clone> From<&[T]> for Json {
    fn from(items: &[T]) -> Json {
        Json::Array(items.iter().cloned().map(Into::into).collect())
    }
}

struct Reader<'a> {
    text: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.at)
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        match self.text[self.at..].starts_with(word.as_bytes()) {
            true => {
                self.at += word.len();
                Ok(value)
            }
            false => Err(self.error("invalid literal")),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        self.space();
        match self.peek() {
            None => Err(self.error("unexpected end")),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[' | b'{') if depth >= MAX_DEPTH => Err(self.error("nested too deeply")),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.space();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.space();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(self.error("expected , or ]")),
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let mut members: Vec<(String, Json)> = Vec::new();
                self.space();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    self.space();
                    if self.peek() != Some(b'"') {
                        return Err(self.error("expected a member name"));
                    }
                    let name = self.string()?;
                    self.space();
                    if self.peek() != Some(b':') {
                        return Err(self.error("expected :"));
                    }
                    self.at += 1;
                    let value = self.value(depth + 1)?;
                    members.push((name, value));
                    self.space();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            break;
                        }
                        _ => return Err(self.error("expected , or }")),
                    }
                }
                // Sorted names side by side: a duplicate is found in n log n, whatever the size.
                let mut names: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
                names.sort_unstable();
                if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
                    return Err(format!("duplicate member \"{}\"", twice[0]));
                }
                Ok(Json::Object(members))
            }
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        // ASCII digits and signs only: the slice is valid UTF-8.
        Ok(Json::Number(String::from_utf8_lossy(&self.text[start..self.at]).into_owned()))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.text.get(self.at..self.at + 4).ok_or_else(|| self.error("short \\u escape"))?;
        let mut n = 0;
        for &d in digits {
            n = n * 16 + (d as char).to_digit(16).ok_or_else(|| self.error("invalid \\u escape"))?;
        }
        self.at += 4;
        Ok(n)
    }

    /// A string, the reader at its opening quote.
    fn string(&mut self) -> Result<String, String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            // Copy the run up to the next quote, backslash or control character at once.
            let start = self.at;
            while let Some(&b) = self.text.get(self.at) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.at += 1;
            }
            // The text is valid UTF-8 and the run ends at an ASCII byte or the end.
            out.push_str(std::str::from_utf8(&self.text[start..self.at]).map_err(|_| self.error("invalid UTF-8"))?);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escape = self.peek().ok_or_else(|| self.error("unterminated string"))?;
                    self.at += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let mut c = self.hex4()?;
                            if (0xD800..0xDC00).contains(&c) {
                                // A high surrogate must be followed by an escaped low one.
                                if !self.text[self.at..].starts_with(b"\\u") {
                                    return Err(self.error("lone surrogate"));
                                }
                                self.at += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(self.error("lone surrogate"));
                                }
                                c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
                            }
                            out.push(char::from_u32(c).ok_or_else(|| self.error("lone surrogate"))?);
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                Some(_) => return Err(self.error("control character in string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Json, String> {
        Json::parse(s.as_bytes())
    }

    #[test]
    fn reads_every_kind_of_value() {
        let v = parse(r#" {"a": [1, -2.5e3, 0, true, false, null], "b": {"c": "d"}, "e": ""} "#).unwrap();
        assert_eq!(v["a"].as_array().unwrap().len(), 6);
        assert_eq!(v["a"].as_array().unwrap()[0].as_u64(), Some(1));
        assert_eq!(v["a"].as_array().unwrap()[1].as_f64(), Some(-2500.0));
        assert_eq!(v["a"].as_array().unwrap()[1].as_i64(), None);
        assert_eq!(v["a"].as_array().unwrap()[3].as_bool(), Some(true));
        assert!(v["a"].as_array().unwrap()[5].is_null());
        assert_eq!(v["b"]["c"].as_str(), Some("d"));
        assert_eq!(v["e"].as_str(), Some(""));
        assert!(v["missing"].is_null());
        assert!(v.get("missing").is_none());
        assert_eq!(v.present("e").and_then(Json::as_str), Some(""));
    }

    #[test]
    fn integers_are_not_rounded() {
        let v = parse("[18446744073709551615, 9007199254740993, -9223372036854775808]").unwrap();
        let items = v.as_array().unwrap();
        assert_eq!(items[0].as_u64(), Some(u64::MAX));
        assert_eq!(items[1].as_u64(), Some(9_007_199_254_740_993));
        assert_eq!(items[2].as_i64(), Some(i64::MIN));
        assert_eq!(items[2].as_u64(), None);
        assert_eq!(parse("1.0").unwrap().as_u64(), None, "a fraction is not an integer");
        assert_eq!(parse("18446744073709551616").unwrap().as_u64(), None, "overflow");
    }

    #[test]
    fn strings_unescape() {
        let v = parse(r#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00é""#).unwrap();
        assert_eq!(v.as_str(), Some("a\"b\\c/d\u{8}\u{c}\n\r\té😀é"));
    }

    #[test]
    fn refuses_what_the_grammar_does_not_allow() {
        for bad in [
            "",
            " ",
            "nul",
            "[1,]",
            "{\"a\":1,}",
            "[1 2]",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\ud800\\u0041\"",
            "\"\\udc00\"",
            "\"tab\there\"",
            "\"open",
            "[1] 2",
            "{} x",
            "'a'",
            "NaN",
            "[",
            "{\"a\":",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        assert!(Json::parse(b"\"\xff\"").is_err(), "not UTF-8");
    }

    #[test]
    fn refuses_duplicate_members_at_any_depth() {
        assert!(parse(r#"{"a":1,"a":2}"#).unwrap_err().contains("duplicate"));
        assert!(parse(r#"[{"x":{"b":1,"c":2,"b":3}}]"#).is_err());
        assert!(parse(r#"{"a":{"a":1}}"#).is_ok(), "the same name at different levels is fine");
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&deep).unwrap_err().contains("deep"));
    }

    #[test]
    fn writes_compact_text_that_reads_back() {
        let v = Json::object([
            ("s", "quote \" backslash \\ newline \n nul \u{0} é".into()),
            ("n", 42u64.into()),
            ("neg", (-7i64).into()),
            ("b", false.into()),
            ("none", Option::<u64>::None.into()),
            ("list", vec!["a", "b"].into()),
            ("empty", Json::Object(vec![])),
        ]);
        let text = v.to_string();
        assert_eq!(
            text,
            r#"{"s":"quote \" backslash \\ newline \n nul \u0000 é","n":42,"neg":-7,"b":false,"none":null,"list":["a","b"],"empty":{}}"#
        );
        assert_eq!(parse(&text).unwrap(), v);
    }

    #[test]
    fn sparse_objects_leave_out_absent_members() {
        let v = Json::sparse(vec![("a", Some(1u64.into())), ("b", None), ("c", Some(Json::Null))]);
        assert_eq!(v.to_string(), r#"{"a":1,"c":null}"#);
    }

    #[test]
    fn set_replaces_or_appends() {
        let mut v = parse(r#"{"a":1}"#).unwrap();
        v.set("a", 2u64.into());
        v.set("b", "x".into());
        assert_eq!(v.to_string(), r#"{"a":2,"b":"x"}"#);
    }
}
