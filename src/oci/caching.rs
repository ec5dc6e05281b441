//! HTTP caching of pull responses (RFC 9111), so that browsers' and CDNs' caches, and
//! Cloudflare's in front of the Worker, can answer repeated pulls.
//!
//! - Content named by digest (manifests by digest, blobs) never changes: it may be kept a year
//!   and never revalidated (`immutable`).
//! - A manifest by tag can change at any push: it is stored but revalidated (`no-cache`, or a
//!   short `max-age` when `WHARF_TAG_MAX_AGE_SECONDS` is set). Its ETag is the digest, so the
//!   revalidation is a 304 without a body.
//! - `public` only where anyone may pull the repository. Elsewhere `private`: a shared cache must
//!   never hand a protected repository's content to the next caller (RFC 9111 §5.2.2.7).
//! - Errors are `no-store`: a 404 or 401 kept by a CDN would outlive the push or login that
//!   changes it.

use crate::auth::Identity;
use crate::auth::access::Actions;
use crate::base::http::Headers;
use crate::base::names::{Digest, RepositoryName};
use crate::registry::Registry;
use crate::storage::{KeyValueStore, ObjectStore};

/// A year: RFC 9111's practical "forever" for immutable content.
const IMMUTABLE: &str = "max-age=31536000, immutable";

/// The ETag of content named by `digest`: the digest itself, as Distribution sends it.
pub fn etag(digest: &Digest) -> String {
    format!("\"{digest}\"")
}

/// Whether an `If-None-Match` names `digest`: quoted or bare (Distribution's etagMatch), in
/// a comma-separated list, weak or strong (RFC 9110 §13.1.2 compares weakly), or `*`.
pub fn none_match(headers: &Headers, digest: &Digest) -> bool {
    let d = digest.to_string();
    headers
        .get_all("if-none-match")
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().trim_start_matches("W/"))
        .any(|v| v == "*" || v == d || v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) == Some(d.as_str()))
}

/// Whether a Range may be honoured under `If-Range` (RFC 9110 §13.1.5): without the header,
/// or when it names this content's (strong) ETag. A date or another ETag means the client's
/// partial copy may be of other content, so it gets the whole.
pub fn if_range_holds(headers: &Headers, digest: &Digest) -> bool {
    match headers.get("if-range") {
        None => true,
        Some(v) => v.trim() == etag(digest),
    }
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    fn visibility(&self, name: &RepositoryName) -> &'static str {
        match &self.config.auth {
            None => "public",
            Some(auth) if auth.permitted(&Identity::Anonymous, name.as_str()).contains(Actions::PULL) => "public",
            Some(_) => "private",
        }
    }

    /// `Cache-Control` of a pull of `name`'s content by digest.
    pub(crate) fn cache_immutable(&self, name: &RepositoryName) -> String {
        format!("{}, {IMMUTABLE}", self.visibility(name))
    }

    /// `Cache-Control` of a pull of a manifest by tag.
    pub(crate) fn cache_by_tag(&self, name: &RepositoryName) -> String {
        match self.config.tag_max_age_secs {
            0 => format!("{}, no-cache", self.visibility(name)),
            secs => format!("{}, max-age={secs}", self.visibility(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str, value: &str) -> Headers {
        Headers::new().with(name, value)
    }

    #[test]
    fn if_none_match_names_the_digest_in_any_usual_form() {
        let d = Digest::sha256_of(b"x");
        for v in [format!("\"{d}\""), d.to_string(), format!("W/\"{d}\""), format!("\"other\", \"{d}\""), "*".into()] {
            assert!(none_match(&headers("If-None-Match", &v), &d), "{v}");
        }
        assert!(!none_match(&headers("If-None-Match", "\"sha256:0000\""), &d));
        assert!(!none_match(&Headers::new(), &d));
    }

    #[test]
    fn if_range_needs_the_strong_etag() {
        let d = Digest::sha256_of(b"x");
        assert!(if_range_holds(&Headers::new(), &d));
        assert!(if_range_holds(&headers("If-Range", &etag(&d)), &d));
        assert!(!if_range_holds(&headers("If-Range", &format!("W/{}", etag(&d))), &d));
        assert!(!if_range_holds(&headers("If-Range", "Wed, 21 Oct 2015 07:28:00 GMT"), &d));
    }
}
