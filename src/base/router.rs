//! Hand-written routing. Repository names contain slashes, so each route is recognised by
//! splitting the path from the right on its marker (`/manifests/`, `/blobs/uploads/`, ...):
//! the part after the marker never contains `/`, the part before is the name. The same
//! module builds the Location URLs, so parsing and building cannot drift apart.

use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::percent_decode;
use crate::base::names::{Digest, Reference, RepositoryName, UploadId};
use serde_json::json;

/// Path of the token endpoint (the realm of challenges), outside `/v2/`.
pub const TOKEN_PATH: &str = "/token";

#[derive(Debug, PartialEq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepositoryName, Reference),
    /// `/v2/<name>/manifests/<reference>` whose reference is neither a tag nor a digest: the
    /// reference as given, and why it is invalid. Distribution's router has no route for it and
    /// answers 404, its dispatcher reads a malformed digest as an unknown tag: what each method
    /// answers is decided in `dispatch`.
    InvalidManifest(RepositoryName, String, RegistryError),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepositoryName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepositoryName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepositoryName, UploadId),
    /// `/v2/<name>/tags/list`
    TagsList(RepositoryName),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepositoryName, Digest),
    /// `/v2/_catalog` (repository names cannot start with `_`)
    Catalog,
}

fn not_found(path: &str) -> RegistryError {
    RegistryError::new(ErrorCode::RouteUnknown).with_detail(json!({ "path": path }))
}

/// Splits `rest` at the last `marker` whose tail has no `/`.
fn split<'a>(rest: &'a str, marker: &str) -> Option<(&'a str, &'a str)> {
    rest.rsplit_once(marker).filter(|(_, tail)| !tail.contains('/'))
}

/// A repository name from its part of the path as sent. Only a `/` sent as such separates its
/// components: an encoded one (`%2F`) is a character of its component, which the grammar
/// refuses (Distribution matches the name on the raw path too).
pub fn name(raw: &str) -> Result<RepositoryName, RegistryError> {
    let decoded = percent_decode(raw);
    if decoded.matches('/').count() != raw.matches('/').count() {
        let reason = "an encoded slash does not separate the components of a name";
        return Err(
            RegistryError::new(ErrorCode::NameInvalid).with_detail(json!({ "name": decoded, "reason": reason }))
        );
    }
    RepositoryName::parse(&decoded)
}

impl Route {
    /// The kind of route, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Manifest(..) | Route::InvalidManifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::UploadStart(_) | Route::Upload(..) => "upload",
            Route::TagsList(_) => "tags",
            Route::Referrers(..) => "referrers",
            Route::Catalog => "catalog",
        }
    }

    pub fn repository(&self) -> Option<&RepositoryName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Manifest(n, _)
            | Route::InvalidManifest(n, ..)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::TagsList(n)
            | Route::Referrers(n, _) => Some(n),
        }
    }

    /// Parses a path as sent, percent-encoded: it is split on the `/` the client sent, and each
    /// part is decoded on its own, so that a `%2F` never makes one segment two (RFC 3986 2.2:
    /// an encoded reserved character is data, not a delimiter). Unknown shapes are
    /// RouteUnknown; a known shape with an invalid name, reference, digest or upload id gets
    /// that identifier's own error.
    pub fn parse(path: &str) -> Result<Route, RegistryError> {
        if path == "/v2/" || path == "/v2" {
            return Ok(Route::Base);
        }
        let rest = path.strip_prefix("/v2/").ok_or_else(|| not_found(path))?;
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        if let Some(n) = rest.strip_suffix("/tags/list") {
            return Ok(Route::TagsList(name(n)?));
        }
        if let Some((n, reference)) = split(rest, "/manifests/") {
            let n = name(n)?;
            let reference = percent_decode(reference);
            return Ok(match Reference::parse(&reference) {
                Ok(r) => Route::Manifest(n, r),
                Err(e) => Route::InvalidManifest(n, reference, e),
            });
        }
        if let Some((n, id)) = split(rest, "/blobs/uploads/") {
            let n = name(n)?;
            if id.is_empty() {
                return Ok(Route::UploadStart(n));
            }
            return Ok(Route::Upload(n, UploadId::parse(&percent_decode(id))?));
        }
        if let Some(n) = rest.strip_suffix("/blobs/uploads") {
            return Ok(Route::UploadStart(name(n)?));
        }
        if let Some((n, digest)) = split(rest, "/blobs/") {
            let n = name(n)?;
            return Ok(Route::Blob(n, Digest::parse(&percent_decode(digest))?));
        }
        if let Some((n, digest)) = split(rest, "/referrers/") {
            let n = name(n)?;
            return Ok(Route::Referrers(n, Digest::parse(&percent_decode(digest))?));
        }
        Err(not_found(path))
    }
}

/// Location of a manifest by digest (relative URLs: the spec allows them, and the Host header
/// is not to be trusted for building absolute ones).
pub fn manifest_url(name: &RepositoryName, digest: &Digest) -> String {
    format!("/v2/{name}/manifests/{digest}")
}

pub fn blob_url(name: &RepositoryName, digest: &Digest) -> String {
    format!("/v2/{name}/blobs/{digest}")
}

pub fn upload_url(name: &RepositoryName, id: &UploadId) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepositoryName {
        RepositoryName::parse(s).unwrap()
    }

    #[test]
    fn routes_split_names_with_slashes_from_the_right() {
        let d = Digest::sha256_of(b"a");
        let id = "0123456789abcdef0123456789abcdef";
        let cases = vec![
            ("/v2/".to_string(), Route::Base),
            ("/v2".to_string(), Route::Base),
            (
                "/v2/a/b/c/d/manifests/latest".to_string(),
                Route::Manifest(name("a/b/c/d"), Reference::parse("latest").unwrap()),
            ),
            (format!("/v2/x/manifests/{d}"), Route::Manifest(name("x"), Reference::Digest(d.clone()))),
            (format!("/v2/manifests/blobs/{d}"), Route::Blob(name("manifests"), d.clone())),
            (format!("/v2/a/manifests/b/blobs/{d}"), Route::Blob(name("a/manifests/b"), d.clone())),
            ("/v2/a/blobs/uploads/".to_string(), Route::UploadStart(name("a"))),
            ("/v2/a/blobs/uploads".to_string(), Route::UploadStart(name("a"))),
            (format!("/v2/a/b/blobs/uploads/{id}"), Route::Upload(name("a/b"), UploadId::parse(id).unwrap())),
            ("/v2/a/b/tags/list".to_string(), Route::TagsList(name("a/b"))),
            (format!("/v2/a/referrers/{d}"), Route::Referrers(name("a"), d.clone())),
            ("/v2/_catalog".to_string(), Route::Catalog),
            ("/v2/tags/manifests/list".to_string(), Route::Manifest(name("tags"), Reference::parse("list").unwrap())),
            // Each segment is decoded on its own.
            (format!("/v2/%61/b/blobs/{}", d.to_string().replace(':', "%3A")), Route::Blob(name("a/b"), d.clone())),
            ("/v2/a/manifests/v%31".to_string(), Route::Manifest(name("a"), Reference::parse("v1").unwrap())),
        ];
        for (path, route) in cases {
            assert_eq!(Route::parse(&path).unwrap(), route, "{path}");
        }
    }

    #[test]
    fn bad_paths_get_the_error_of_the_bad_part() {
        let cases = [
            ("/", ErrorCode::RouteUnknown),
            ("/v2/a", ErrorCode::RouteUnknown),
            ("/v2/A/manifests/latest", ErrorCode::NameInvalid),
            ("/v2/a/blobs/nope", ErrorCode::DigestInvalid),
            ("/v2/a/blobs/uploads/../x", ErrorCode::RouteUnknown),
            ("/v2/a/blobs/uploads/xyz", ErrorCode::BlobUploadUnknown),
            ("/v2//manifests/latest", ErrorCode::NameInvalid),
            // An encoded slash is data inside its segment, never a separator.
            ("/v2/a/blobs/sha256:..%2F..%2Fetc%2Fpasswd", ErrorCode::DigestInvalid),
            ("/v2/a/blobs/uploads/..%2F0123456789abcdef0123456789abcdef", ErrorCode::BlobUploadUnknown),
            ("/v2/a/blobs/uploads/%2F", ErrorCode::BlobUploadUnknown),
            ("/v2/a/referrers/sha256:%2F", ErrorCode::DigestInvalid),
            ("/v2/a%2Fb/manifests/latest", ErrorCode::NameInvalid),
            ("/v2/a%2fb/tags/list", ErrorCode::NameInvalid),
            ("/v2/a/b%2F..%2F..%2Fc/blobs/uploads/", ErrorCode::NameInvalid),
            ("/v2/a%2Fmanifests%2Flatest", ErrorCode::RouteUnknown),
        ];
        for (path, code) in cases {
            assert_eq!(Route::parse(path).unwrap_err().code, code, "{path}");
        }
    }

    #[test]
    fn an_invalid_manifest_reference_keeps_its_route_and_its_error() {
        for (reference, decoded, code) in [
            ("", "", ErrorCode::TagInvalid),
            (".INVALID_MANIFEST_NAME", ".INVALID_MANIFEST_NAME", ErrorCode::TagInvalid),
            ("sha256:bad", "sha256:bad", ErrorCode::DigestInvalid),
            // An encoded slash is data inside its segment, never a separator.
            ("a%2Fb", "a/b", ErrorCode::TagInvalid),
            ("..%2F..%2Fx", "../../x", ErrorCode::TagInvalid),
        ] {
            match Route::parse(&format!("/v2/a/b/manifests/{reference}")).unwrap() {
                Route::InvalidManifest(n, r, e) => assert_eq!((n, r.as_str(), e.code), (name("a/b"), decoded, code)),
                other => panic!("{reference}: {other:?}"),
            }
        }
    }

    #[test]
    fn location_urls_parse_back_to_their_routes() {
        let n = name("a/b");
        let d = Digest::sha256_of(b"z");
        let id = UploadId::random().unwrap();
        assert_eq!(
            Route::parse(&manifest_url(&n, &d)).unwrap(),
            Route::Manifest(n.clone(), Reference::Digest(d.clone()))
        );
        assert_eq!(Route::parse(&blob_url(&n, &d)).unwrap(), Route::Blob(n.clone(), d));
        assert_eq!(Route::parse(&upload_url(&n, &id)).unwrap(), Route::Upload(n, id));
    }
}
