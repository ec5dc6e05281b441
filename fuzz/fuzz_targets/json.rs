//! wharf's JSON reader against serde_json's, on any bytes: what wharf accepts, serde_json
//! accepts as the same value; what serde_json accepts, wharf accepts too. Two differences are
//! by design (see `json`): wharf refuses an object that repeats a name, and keeps a number of
//! any magnitude as its text where serde_json refuses one beyond f64 (`1e400`), as Go's decoder
//! skips it in a field it ignores. What wharf writes reads back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wharf::json::Json;

/// wharf's tree as serde_json's, numbers read by serde_json from their literal text.
fn to_serde(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => serde_json::from_str(n).expect("a number wharf accepted"),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(to_serde).collect()),
        Json::Object(members) => Value::Object(members.iter().map(|(k, v)| (k.clone(), to_serde(v))).collect()),
    }
}

fuzz_target!(|data: &[u8]| {
    let ours = Json::parse(data);
    let theirs = serde_json::from_slice::<Value>(data);
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => {
            assert_eq!(to_serde(&ours), theirs);
            assert_eq!(Json::parse(ours.to_string().as_bytes()).as_ref(), Ok(&ours), "written text reads back");
        }
        (Ok(_), Err(e)) if e.to_string().contains("number out of range") => {}
        (Ok(ours), Err(e)) => panic!("wharf accepted what serde_json refuses ({e}): {ours}"),
        (Err(e), Ok(_)) => assert!(e.contains("duplicate member"), "wharf refused what serde_json accepts: {e}"),
        (Err(_), Err(_)) => {}
    }
});
