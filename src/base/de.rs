//! What the formats wharf reads share on top of serde's derive.
//!
//! A derived struct refuses a field it knows given twice (`duplicate field`): RFC 8259 §4
//! leaves repeated names to the implementation and I-JSON (RFC 7493 §2.3) forbids them, and
//! refusing them means no two parsers can disagree about what a manifest or a token says (Go's
//! decoder takes the last of two `layers`, others the first). Members a struct does not name
//! are skipped, given twice or not. Here:
//! - [`Object`]: a struct read from a JSON object only (a derived struct also reads an array
//!   of its field values, in order);
//! - [`Members`]: an object's members in document order, a name given twice refused (a map
//!   would keep the last);
//! - [`from_object`]: a whole text read as an [`Object`], UTF-8 throughout;
//! - [`nullable`] and [`lenient`]: null read as absent; a member skipped when it is not of the
//!   type wharf can use.

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, Error, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// A `T` read from a JSON object only: serde's derived structs would also take an array of
/// the field values in order, a form no format wharf reads has.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OnlyObjects<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyObjects<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(OnlyObjects(PhantomData)).map(Object)
    }
}

/// Reads a JSON text that must be an object of `T`'s shape. The whole text must be UTF-8 (RFC
/// 8259 §8.1), the strings of members wharf skips included, which serde_json alone leaves
/// unchecked.
pub fn from_object<T: DeserializeOwned>(text: &[u8]) -> serde_json::Result<T> {
    let text = std::str::from_utf8(text)
        .map_err(|e| serde_json::Error::custom(format_args!("not UTF-8 at byte {}", e.valid_up_to())))?;
    serde_json::from_str::<Object<T>>(text).map(|o| o.0)
}

/// A JSON object as its members in document order, each name once: annotations, the users of
/// `WHARF_USERS` and of a rule. A name given twice is refused.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Members<T>(pub Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Members<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for MembersVisitor<T> {
            type Value = Members<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<T>, A::Error> {
                let mut members = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    members.push((name, map.next_value()?));
                }
                // Sorted names side by side, rather than a search per member: a 4 MiB manifest
                // may hold a hundred thousand annotations.
                let mut names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
                names.sort_unstable();
                if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
                    return Err(A::Error::custom(format_args!("duplicate member `{}`", twice[0])));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor(PhantomData))
    }
}

/// Written in document order.
impl<T: Serialize> Serialize for Members<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(n, v)| (n, v)))
    }
}

/// For `#[serde(default, deserialize_with = "de::nullable")]`: a member that may be absent or
/// null, both read as `T`'s default; a present one must be a `T`.
pub fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(deserializer: D) -> Result<T, D::Error> {
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// For `#[serde(default, deserialize_with = "de::lenient")]`: a member read when it is a `T`
/// and skipped (`None`) when it is anything else, for answers of other servers that wharf
/// takes what it can from.
pub fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(deserializer: D) -> Result<Option<T>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Pair {
        a: u8,
        #[serde(default, deserialize_with = "nullable")]
        b: String,
    }

    #[test]
    fn objects_only_and_each_field_once() {
        assert_eq!(from_object::<Pair>(br#"{"a":1,"b":"x","c":[{}]}"#).unwrap(), Pair { a: 1, b: "x".into() });
        assert_eq!(from_object::<Pair>(br#"{"a":1,"b":null}"#).unwrap(), Pair { a: 1, b: String::new() });
        assert_eq!(from_object::<Pair>(br#"{"a":1}"#).unwrap(), Pair { a: 1, b: String::new() });
        assert!(serde_json::from_str::<Pair>(r#"[1,"x"]"#).is_ok(), "what a derived struct alone takes");
        assert!(from_object::<Pair>(br#"[1,"x"]"#).is_err());
        let twice = from_object::<Pair>(br#"{"a":1,"a":2}"#).unwrap_err();
        assert!(twice.to_string().contains("duplicate field `a`"), "{twice}");
        assert!(from_object::<Pair>(br#"{"a":1,"b":2}"#).is_err());
        assert!(from_object::<Pair>(b"{\"a\":1,\"c\":\"\xff\"}").is_err(), "not UTF-8 where nothing is read");
    }

    #[test]
    fn members_keep_document_order_and_refuse_a_name_twice() {
        let m: Members<String> = serde_json::from_str(r#"{"z":"1","a":"2"}"#).unwrap();
        assert_eq!(m.0, [("z".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())]);
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"z":"1","a":"2"}"#);
        let twice = serde_json::from_str::<Members<String>>(r#"{"a":"1","b":"2","a":"3"}"#).unwrap_err();
        assert!(twice.to_string().contains("duplicate member `a`"), "{twice}");
        assert!(serde_json::from_str::<Members<String>>(r#"{"a":1}"#).is_err());
        assert!(serde_json::from_str::<Members<String>>(r#"[["a","1"]]"#).is_err());
    }

    #[test]
    fn lenient_members_skip_what_they_cannot_read() {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default, deserialize_with = "lenient")]
            n: Option<u64>,
        }
        let n = |text: &str| serde_json::from_str::<Answer>(text).unwrap().n;
        assert_eq!(n(r#"{"n":5}"#), Some(5));
        assert_eq!(n(r#"{"n":"5"}"#), None);
        assert_eq!(n(r#"{"n":5.5}"#), None);
        assert_eq!(n(r#"{"n":null}"#), None);
        assert_eq!(n("{}"), None);
    }
}
