//! The manifests' settings: which layer URLs a pushed manifest may carry
//! (`WHARF_MANIFEST_URLS_*`; see `oci::manifests::format`).

/// A regular expression of `WHARF_MANIFEST_URLS_ALLOW` or `_DENY`, compared by its text.
#[derive(Debug, Clone)]
pub struct UrlPattern(regex_lite::Regex);

impl PartialEq for UrlPattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// Distribution's `validation.manifests.urls`: which layer URLs a pushed manifest may carry.
/// A pattern matches anywhere in the URL (Go's `MatchString`); anchor it with `^` to match a
/// prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManifestUrls {
    /// Every URL must match it. Unset, any http(s) URL passes (see README for how this differs
    /// from Distribution's default).
    pub allow: Option<UrlPattern>,
    /// No URL may match it.
    pub deny: Option<UrlPattern>,
}

impl ManifestUrls {
    /// Compiles one variable's pattern; empty means unset.
    pub fn pattern(name: &str, value: Option<&str>) -> Result<Option<UrlPattern>, String> {
        match value.map(str::trim) {
            None | Some("") => Ok(None),
            Some(p) => regex_lite::Regex::new(p).map(|r| Some(UrlPattern(r))).map_err(|e| format!("{name}: {e}")),
        }
    }

    /// Why `url` may not be named by a layer, if it may not: it must be an absolute http or
    /// https URL with a host and without a fragment (Distribution: `url.Parse`, the scheme, no
    /// fragment), match `allow` when set and not match `deny`.
    pub fn refuse(&self, url: &str) -> Option<&'static str> {
        let Some((scheme, rest)) = url.split_once("://") else { return Some("not an absolute URL") };
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Some("only http and https URLs are allowed");
        }
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.rsplit('@').next().is_none_or(str::is_empty) {
            return Some("the URL has no host");
        }
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) || !percent_escapes_are_valid(url) {
            return Some("the URL does not parse");
        }
        if url.split_once('#').is_some_and(|(_, fragment)| !fragment.is_empty()) {
            return Some("the URL has a fragment");
        }
        if self.allow.as_ref().is_some_and(|a| !a.0.is_match(url)) {
            return Some("the URL does not match the allowed patterns");
        }
        if self.deny.as_ref().is_some_and(|d| d.0.is_match(url)) {
            return Some("the URL matches a denied pattern");
        }
        None
    }
}

/// Every `%` starts two hex digits (Go's url.Parse refuses others).
fn percent_escapes_are_valid(url: &str) -> bool {
    let b = url.as_bytes();
    b.iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .all(|(i, _)| b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)))
}
