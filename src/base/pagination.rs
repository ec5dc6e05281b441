//! The `n` parameter and `Link` header of the paginated listings: tags/list, _catalog and
//! referrers (distribution-spec "Listing Tags": `n` caps the count, `n=0` is an empty list
//! without Link, `Link: <url>; rel="next"` when more exist, RFC 8288).

use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::percent_encode;
use serde_json::json;

/// The page size asked for: `n`, or `max` without it. Not a number, or above `max`:
/// 400 PAGINATION_NUMBER_INVALID.
pub fn page_size(n: Option<&str>, max: usize) -> Result<usize, RegistryError> {
    let Some(n) = n else { return Ok(max) };
    n.parse::<usize>().ok().filter(|&v| v <= max).ok_or_else(|| {
        RegistryError::new(ErrorCode::PaginationNumberInvalid).with_detail(json!({ "n": n, "max": max }))
    })
}

/// `<path?k=v&...>; rel="next"`, values percent-encoded.
pub fn next_link(path: &str, params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
    format!("<{path}?{}>; rel=\"next\"", query.join("&"))
}

/// Where a listing of names at most `longest` bytes long starts, for a client's `last` of any
/// length: `last` cut to `longest + 1` bytes sorts the same against every such name (a name
/// shorter than `last` is decided within its own length), and keeps the storage key within
/// the store's limits (R2 takes keys of 1,024 bytes).
pub fn listing_start(last: &str, longest: usize) -> &str {
    let mut end = last.len().min(longest + 1);
    while !last.is_char_boundary(end) {
        end -= 1;
    }
    &last[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_last_is_cut_where_it_changes_no_order() {
        let long = format!("v1{}", "z".repeat(3000));
        let start = listing_start(&long, 128);
        assert_eq!(start.len(), 129);
        for tag in ["v1", "v1zzz", "v2", &"v1".repeat(64)] {
            assert_eq!(tag > long.as_str(), tag > start, "{tag}");
        }
        assert_eq!(listing_start("v1", 128), "v1");
        assert_eq!(listing_start(&"é".repeat(100), 128).len(), 128);
    }

    #[test]
    fn page_sizes_are_numbers_up_to_the_maximum() {
        assert_eq!(page_size(None, 1000), Ok(1000));
        assert_eq!(page_size(Some("0"), 1000), Ok(0));
        assert_eq!(page_size(Some("1000"), 1000), Ok(1000));
        for bad in ["1001", "-1", "ten", "", "1.5"] {
            assert_eq!(page_size(Some(bad), 1000).unwrap_err().code, ErrorCode::PaginationNumberInvalid, "{bad}");
        }
    }

    #[test]
    fn links_encode_their_values() {
        assert_eq!(
            next_link("/v2/a/tags/list", &[("n", "2"), ("last", "v1.0")]),
            "</v2/a/tags/list?n=2&last=v1.0>; rel=\"next\""
        );
        assert_eq!(next_link("/v2/_catalog", &[("last", "a/b+c")]), "</v2/_catalog?last=a%2Fb%2Bc>; rel=\"next\"");
    }
}
