//! The one table of OCI error codes.
//!
//! Every error a client can see is an [`ErrorCode`]; its wire code, HTTP status and default
//! message are decided here, in one exhaustive `match`, and nowhere else (distribution-spec v1.1
//! "Error Codes"; CNCF Distribution registry/api/errcode/register.go). Handlers return
//! [`RegistryError`]; [`RegistryError::body`] writes the `{"errors":[...]}` envelope.
//! Internal causes (storage failures) are logged by the caller of [`RegistryError::internal`]
//! and never shown to the client.

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;

/// Every error the registry answers with. Variants sharing a wire code but not a status
/// (e.g. an oversized manifest) are separate variants, so no call site ever picks a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    /// A request body above the configured limit: the spec asks for 413 (manifests: "reject
    /// larger with 413"); the code is SIZE_INVALID, the closest registered one.
    PayloadTooLarge,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    TagInvalid,
    RangeInvalid,
    PaginationNumberInvalid,
    /// No endpoint has this path. The spec registers no code for it; UNSUPPORTED is closest.
    RouteUnknown,
    /// Pull-through cache mode: the upstream registry could not be reached or answered with
    /// something unusable. No registered code fits; UNKNOWN with 502 Bad Gateway.
    UpstreamFailed,
    Unknown,
}

impl ErrorCode {
    /// (wire code, HTTP status, default message). Statuses follow Distribution's register.go,
    /// but for BLOB_UPLOAD_INVALID: Distribution gives it 404, for an upload state token it
    /// cannot read (wharf keeps no such token). wharf sends it only for a request body that
    /// broke off before its announced length, which is the client's fault: 400.
    const fn row(self) -> (&'static str, u16, &'static str) {
        use ErrorCode::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", 404, "blob unknown to registry"),
            BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid"),
            BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"),
            DigestInvalid => ("DIGEST_INVALID", 400, "provided digest did not match uploaded content"),
            ManifestBlobUnknown => ("MANIFEST_BLOB_UNKNOWN", 400, "blob unknown to registry"),
            ManifestInvalid => ("MANIFEST_INVALID", 400, "manifest invalid"),
            ManifestUnknown => ("MANIFEST_UNKNOWN", 404, "manifest unknown"),
            NameInvalid => ("NAME_INVALID", 400, "invalid repository name"),
            NameUnknown => ("NAME_UNKNOWN", 404, "repository name not known to registry"),
            SizeInvalid => ("SIZE_INVALID", 400, "provided length did not match content length"),
            PayloadTooLarge => ("SIZE_INVALID", 413, "payload too large"),
            Unauthorized => ("UNAUTHORIZED", 401, "authentication required"),
            Denied => ("DENIED", 403, "requested access to the resource is denied"),
            Unsupported => ("UNSUPPORTED", 405, "the operation is unsupported"),
            TooManyRequests => ("TOOMANYREQUESTS", 429, "too many requests"),
            TagInvalid => ("TAG_INVALID", 400, "manifest tag did not match URI"),
            RangeInvalid => ("RANGE_INVALID", 416, "invalid content range"),
            PaginationNumberInvalid => ("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"),
            RouteUnknown => ("UNSUPPORTED", 404, "no such endpoint"),
            UpstreamFailed => ("UNKNOWN", 502, "the upstream registry failed to answer"),
            Unknown => ("UNKNOWN", 500, "unknown error"),
        }
    }

    pub const fn code(self) -> &'static str {
        self.row().0
    }
    pub const fn status(self) -> u16 {
        self.row().1
    }
    pub const fn default_message(self) -> &'static str {
        self.row().2
    }
}

/// An error on its way to the client: a code, optionally a more precise message, and a
/// detail (free-form JSON, as the spec allows). The envelope holds a list: `more` follows this
/// error in it, as Distribution lists every reference a manifest lacks in one answer. The status
/// is this first error's.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: Option<Cow<'static, str>>,
    pub detail: Option<serde_json::Value>,
    /// Headers the answer needs besides the body (a challenge, Retry-After, Content-Range).
    pub headers: Vec<(&'static str, String)>,
    /// Further errors of the same answer, in order (their status and headers are not used).
    pub more: Vec<RegistryError>,
}

impl RegistryError {
    pub fn new(code: ErrorCode) -> Self {
        Self { code, message: None, detail: None, headers: Vec::new(), more: Vec::new() }
    }
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = Some(message.into());
        self
    }
    pub fn with_detail(mut self, detail: impl Into<serde_json::Value>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    /// One answer of several errors: the first of `errors` with the others after it; `None` when
    /// there is none.
    pub fn all(errors: impl IntoIterator<Item = RegistryError>) -> Option<Self> {
        let mut errors = errors.into_iter();
        let mut first = errors.next()?;
        first.more.extend(errors.flat_map(|e| {
            let more = e.more.clone();
            std::iter::once(RegistryError { more: Vec::new(), ..e }).chain(more)
        }));
        Some(first)
    }
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    /// A server-side failure. The cause goes to the log, the client sees only UNKNOWN.
    pub fn internal(cause: impl fmt::Display) -> Self {
        crate::base::log::error(&format!("internal error: {cause}"));
        Self::new(ErrorCode::Unknown)
    }
    pub fn status(&self) -> u16 {
        self.code.status()
    }
    pub fn message(&self) -> &str {
        self.message.as_deref().unwrap_or(self.code.default_message())
    }

    fn entry(&self) -> Entry<'_> {
        Entry { code: self.code.code(), message: self.message(), detail: self.detail.as_ref() }
    }

    /// The JSON envelope of the spec: `{"errors":[{"code","message","detail"},...]}`.
    pub fn body(&self) -> Vec<u8> {
        let errors: Vec<Entry<'_>> = std::iter::once(self).chain(&self.more).map(RegistryError::entry).collect();
        serde_json::to_vec(&Envelope { errors }).unwrap_or_default()
    }
}

/// The error envelope (distribution-spec "Error Codes").
#[derive(Serialize)]
struct Envelope<'a> {
    errors: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    code: &'static str,
    message: &'a str,
    /// Left out when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

impl From<ErrorCode> for RegistryError {
    fn from(code: ErrorCode) -> Self {
        Self::new(code)
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.code(), self.message())
    }
}

/// The client's request body broke off mid-way, or ended before its announced length. Logged:
/// the client may no longer be there to read the answer.
pub fn body_error(e: String) -> RegistryError {
    crate::base::log::error(&format!("the request body broke off: {e}"));
    RegistryError::new(ErrorCode::BlobUploadInvalid).with_message("the request body could not be read").with_detail(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_distribution_table() {
        let cases = [
            (ErrorCode::BlobUnknown, 404),
            (ErrorCode::BlobUploadInvalid, 400),
            (ErrorCode::ManifestBlobUnknown, 400),
            (ErrorCode::ManifestUnknown, 404),
            (ErrorCode::Unsupported, 405),
            (ErrorCode::Denied, 403),
            (ErrorCode::RangeInvalid, 416),
            (ErrorCode::PayloadTooLarge, 413),
            (ErrorCode::TooManyRequests, 429),
            (ErrorCode::Unknown, 500),
        ];
        for (code, status) in cases {
            assert_eq!(code.status(), status, "{code:?}");
        }
    }

    #[test]
    fn envelope_has_code_message_and_detail() {
        let e = RegistryError::new(ErrorCode::ManifestBlobUnknown).with_detail("sha256:abc");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "blob unknown to registry");
        assert_eq!(v["errors"][0]["detail"], "sha256:abc");
    }

    #[test]
    fn envelope_omits_absent_detail_and_uses_custom_message() {
        let e = RegistryError::new(ErrorCode::Unsupported).with_message("deletes are disabled");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["message"], "deletes are disabled");
        assert!(v["errors"][0].get("detail").is_none());
    }

    #[test]
    fn several_errors_share_one_envelope_in_order_with_the_first_ones_status() {
        let e = RegistryError::all([
            RegistryError::new(ErrorCode::DigestInvalid).with_detail("x"),
            RegistryError::new(ErrorCode::ManifestBlobUnknown).with_detail("x"),
            RegistryError::new(ErrorCode::ManifestBlobUnknown).with_detail("y"),
        ])
        .unwrap();
        assert_eq!(e.status(), 400);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        let entries: Vec<(&str, &str)> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["code"].as_str().unwrap(), e["detail"].as_str().unwrap()))
            .collect();
        assert_eq!(entries, [("DIGEST_INVALID", "x"), ("MANIFEST_BLOB_UNKNOWN", "x"), ("MANIFEST_BLOB_UNKNOWN", "y")]);
        assert!(RegistryError::all([]).is_none());
    }

    #[test]
    fn envelope_members_are_in_the_spec_order() {
        let e = RegistryError::new(ErrorCode::NameUnknown).with_detail(serde_json::json!({ "name": "r" }));
        assert_eq!(
            String::from_utf8(e.body()).unwrap(),
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{"name":"r"}}]}"#
        );
    }
}
