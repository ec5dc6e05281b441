//! Cross-origin requests from browser UIs (`WHARF_CORS_ORIGINS`), as the Fetch standard's CORS
//! protocol has them (https://fetch.spec.whatwg.org/#http-cors-protocol).
//!
//! A listed origin gets, on every answer (errors included, so that a UI can read a 401's
//! `WWW-Authenticate` and log in), its own origin back with credentials allowed and the
//! registry's headers exposed; its preflights (`OPTIONS` on `/v2/...` and `/token`) are answered
//! 204. An origin not listed gets no CORS header at all, so the browser keeps the answer from
//! its page. Never `*`: credentials (a registry's `Authorization`) rule it out.

use crate::base::http::{Headers, Response};

/// The origins allowed, exactly as browsers send them (`https://ui.example.com`, a port when not
/// the scheme's default), none by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CorsOrigins(Vec<String>);

/// What a UI may send: the request headers a registry client sets.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, Range, Content-Range, If-None-Match, If-Range";
const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// What a UI may read of an answer, beyond the CORS-safelisted headers.
const EXPOSE_HEADERS: &str = "Docker-Content-Digest, Docker-Distribution-API-Version, Docker-Upload-UUID, Link, \
     Location, Range, Content-Range, WWW-Authenticate, OCI-Subject, OCI-Tag, OCI-Filters-Applied";
/// How long a browser may keep a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

impl CorsOrigins {
    /// `WHARF_CORS_ORIGINS`: comma-separated origins, each `http(s)://host[:port]`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut origins = Vec::new();
        for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            let valid = host.is_some_and(|h| {
                !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            });
            if !valid {
                return Err(format!(
                    "WHARF_CORS_ORIGINS: \"{origin}\" is not an origin (scheme://host[:port], no path, not *)"
                ));
            }
            origins.push(origin.to_ascii_lowercase());
        }
        Ok(Self(origins))
    }

    /// The request's `Origin` when it is listed.
    pub fn allowed<'a>(&self, headers: &'a Headers) -> Option<&'a str> {
        let origin = headers.get("origin")?;
        self.0.iter().any(|o| o == origin).then_some(origin)
    }

    /// The answer to a preflight from a listed origin, before [`CorsOrigins::decorate`] (as
    /// every answer to it).
    pub fn preflight<S>() -> Response<S> {
        Response::new(204)
            .header("Access-Control-Allow-Methods", ALLOW_METHODS)
            .header("Access-Control-Allow-Headers", ALLOW_HEADERS)
            .header("Access-Control-Max-Age", MAX_AGE)
            .header("Content-Length", "0")
    }

    /// An answer to `origin`, a listed one, that its page may read.
    pub fn decorate<S>(response: Response<S>, origin: &str) -> Response<S> {
        response
            .header("Access-Control-Allow-Origin", origin)
            .header("Access-Control-Allow-Credentials", "true")
            .header("Access-Control-Expose-Headers", EXPOSE_HEADERS)
            // The answer differs by origin: no cache may give it to another.
            .header("Vary", "Origin")
    }
}

/// Whether `path` is one whose preflights are answered: the registry API and the token endpoint.
pub fn preflight_path(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/") || path == crate::base::router::TOKEN_PATH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_read_exactly_and_anything_else_is_refused() {
        let o = CorsOrigins::parse(" https://ui.example.com, http://localhost:8080 ,").unwrap();
        assert_eq!(o.0, ["https://ui.example.com", "http://localhost:8080"]);
        for bad in ["*", "ui.example.com", "https://ui.example.com/", "https://a.com/path", "ftp://a.com", "https://"] {
            assert!(CorsOrigins::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(CorsOrigins::parse("").unwrap(), CorsOrigins::default());
    }

    #[test]
    fn only_a_listed_origin_is_allowed() {
        let o = CorsOrigins::parse("https://ui.example.com").unwrap();
        let mut h = Headers::new();
        assert_eq!(o.allowed(&h), None);
        h.append("Origin", "https://evil.example.com");
        assert_eq!(o.allowed(&h), None);
        let mut h = Headers::new();
        h.append("Origin", "https://ui.example.com");
        assert_eq!(o.allowed(&h), Some("https://ui.example.com"));
        let mut h = Headers::new();
        h.append("Origin", "https://ui.example.com.evil.com");
        assert_eq!(o.allowed(&h), None);
    }
}
