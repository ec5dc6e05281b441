//! `/v2/<name>/blobs/<digest>`: GET, HEAD and DELETE.
//!
//! A repository holds a blob when its link object exists; the link names the object with the
//! bytes (see `keys`). A GET is two round trips: the link, then the bytes, streamed from R2 to
//! the client without passing through wasm memory.

use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::{Body, Headers, OCTET_STREAM, Response};
use crate::base::names::{Digest, RepositoryName};
use crate::config::notify::Action;
use crate::oci::caching;
use crate::registry::events::Target;
use crate::registry::{Registry, Result};
use crate::storage::keys::{self, Holder};
use crate::storage::{ByteRange, KeyValueStore, Metadata, ObjectStore, PutOptions};
use serde_json::json;

/// Where a repository's blob lives and how big it is (custom metadata of its link object).
pub(crate) struct BlobLink {
    pub object: String,
    pub size: u64,
}

impl BlobLink {
    fn to_metadata(&self) -> Metadata {
        [("object", self.object.clone()), ("size", self.size.to_string())].into_iter().collect()
    }
    pub(crate) fn from_metadata(m: &Metadata) -> Option<Self> {
        Some(Self { object: m.get("object")?.clone(), size: m.get("size")?.parse().ok()? })
    }
}

#[derive(Debug, PartialEq)]
enum RangeRequest {
    Range(ByteRange),
    Unsatisfiable,
    Ignored,
}

/// Reads `bytes=a-b`, `bytes=a-` and `bytes=-n` against an object of `size` bytes.
fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeRequest::Ignored };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeRequest::Ignored };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end) = match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-n: the last n bytes
        (true, _, Some(n)) if n > 0 && size > 0 => (size.saturating_sub(n), size - 1),
        (true, _, Some(_)) => return RangeRequest::Unsatisfiable,
        (false, Some(a), None) if last.trim().is_empty() => (a, size.saturating_sub(1)),
        (false, Some(a), Some(b)) if a <= b => (a, b.min(size.saturating_sub(1))),
        _ => return RangeRequest::Ignored,
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Range(ByteRange { offset: start, length: end - start + 1 })
}

/// What a repository's holder of blob bytes says (see `keys`, "holders").
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hold<'a> {
    /// Its link names them.
    Linked,
    /// Its link is gone.
    Unlinked,
    /// Its link names them, and the dry run of garbage collection with this id would remove it.
    DoomedIn(&'a str),
}

fn blob_unknown(digest: &Digest) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUnknown).with_detail(digest.to_string())
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Where a repository's blob is, if it holds it: from the isolate's memo, else from R2.
    pub(crate) async fn blob_link(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<BlobLink>> {
        let now = self.now_secs();
        let d = digest.to_string();
        if let Some((object, size)) = self.memo.link(name.as_str(), &d, now) {
            return Ok(Some(BlobLink { object, size }));
        }
        self.stored_blob_link(name, digest).await
    }

    /// The blob's link as storage has it now, remembered for the next lookup.
    pub(crate) async fn stored_blob_link(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<BlobLink>> {
        let read_at = self.memo.generation();
        let Some(meta) = self.objects.head(&keys::blob_link(name, digest)).await? else {
            return Ok(None);
        };
        let link = BlobLink::from_metadata(&meta.custom)
            .ok_or_else(|| RegistryError::internal(format!("blob link {} has no object metadata", meta.key)))?;
        self.memo.remember_link(
            name.as_str(),
            &digest.to_string(),
            &link.object,
            link.size,
            self.now_secs(),
            Some(read_at),
        );
        Ok(Some(link))
    }

    /// Where the bytes of a blob are, whichever repository holds it.
    pub(crate) async fn blob_by_digest(&self, digest: &Digest) -> Result<Option<BlobLink>> {
        let Some(meta) = self.objects.head(&keys::blob_index(digest)).await? else { return Ok(None) };
        Ok(BlobLink::from_metadata(&meta.custom))
    }

    /// Records where a blob's bytes are, registry-wide.
    pub(crate) async fn index_blob(&self, digest: &Digest, link: &BlobLink) -> Result<()> {
        let options = PutOptions { custom: link.to_metadata(), ..Default::default() };
        self.objects.put(&keys::blob_index(digest), Vec::new(), options).await?;
        Ok(())
    }

    /// Makes the blob part of the repository: its holder first, then its link, so that no link
    /// names bytes without a holder saying so (garbage collection goes by holders, see `gc`).
    pub(crate) async fn link_blob(&self, name: &RepositoryName, digest: &Digest, link: &BlobLink) -> Result<()> {
        self.hold(name, digest, link, Hold::Linked).await?;
        self.write_link(name, digest, link).await
    }

    /// Writes the link alone: its holder must be written already.
    pub(crate) async fn write_link(&self, name: &RepositoryName, digest: &Digest, link: &BlobLink) -> Result<()> {
        let options = PutOptions { custom: link.to_metadata(), ..Default::default() };
        self.objects.put(&keys::blob_link(name, digest), Vec::new(), options).await?;
        self.memo.remember_link(name.as_str(), &digest.to_string(), &link.object, link.size, self.now_secs(), None);
        Ok(())
    }

    /// Records whether the repository holds the bytes of the link. An unlinked holder stays,
    /// with the digest, until the collection decides on the bytes: it tells which index entry
    /// may name them.
    pub(crate) async fn hold(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        link: &BlobLink,
        hold: Hold<'_>,
    ) -> Result<()> {
        let Some(upload) = keys::upload_of_object(&link.object) else {
            return Err(RegistryError::internal(format!("a link names {}, which is no blob object", link.object)));
        };
        let mut custom = Metadata::new();
        custom.insert("digest", digest.to_string());
        match hold {
            Hold::Linked => {}
            Hold::Unlinked => custom.insert("unlinked", "1"),
            Hold::DoomedIn(run) => custom.insert("doomedIn", run),
        }
        let key = keys::holder(&upload, &Holder::Repository(name.clone()));
        self.objects.put(&key, Vec::new(), PutOptions { custom, ..Default::default() }).await?;
        Ok(())
    }

    /// GET and HEAD, with single byte ranges (RFC 9110 §14): 206 with Content-Range, 416 when
    /// the range starts past the end. Other Range headers (several ranges, other units, garbage)
    /// are ignored and the whole blob is sent, as the RFC allows, and so is a Range whose
    /// `If-Range` does not name this blob. `If-None-Match` naming it is 304.
    pub(crate) async fn get_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        headers: &Headers,
        head: bool,
    ) -> Result<Response<O::Body>> {
        let link = match (self.blob_link(name, digest).await?, &self.config.upstream) {
            (Some(link), _) => link,
            (None, Some(up)) => match self.landed_pull(name, digest).await? {
                Some(link) => link,
                None => return self.pull_blob(up, name, digest, head).await,
            },
            (None, None) => return Err(blob_unknown(digest)),
        };
        let validators = |r: Response<O::Body>| {
            r.header("Docker-Content-Digest", digest.to_string())
                .header("ETag", caching::etag(digest))
                .header("Cache-Control", self.cache_immutable(name))
        };
        if caching::none_match(headers, digest) {
            // Typed as the 200 would be (see the manifests' 304).
            return Ok(validators(Response::new(304)).header("Content-Type", OCTET_STREAM));
        }
        let range_header = headers.get("range").filter(|_| caching::if_range_holds(headers, digest));
        let range = match range_header.map(|r| parse_range(r, link.size)) {
            Some(RangeRequest::Unsatisfiable) => {
                let e = RegistryError::new(ErrorCode::RangeInvalid).with_detail(json!({ "size": link.size }));
                return Err(e.with_header("Content-Range", format!("bytes */{}", link.size)));
            }
            Some(RangeRequest::Range(r)) => Some(r),
            Some(RangeRequest::Ignored) | None => None,
        };
        let (status, length) = match range {
            Some(r) => (206, r.length),
            None => (200, link.size),
        };
        let mut response = validators(Response::new(status))
            // An explicit type: without it workerd and Cloudflare's edge compress the blob for
            // gzip-accepting clients, dropping Content-Length and burning CPU.
            .header("Content-Type", OCTET_STREAM)
            .header("Content-Length", length.to_string())
            .header("Accept-Ranges", "bytes");
        if let Some(r) = range {
            let last = r.offset + r.length - 1;
            response = response.header("Content-Range", format!("bytes {}-{last}/{}", r.offset, link.size));
        }
        if head {
            return Ok(response);
        }
        match self.objects.get(&link.object, range).await? {
            Some((_, body)) => Ok(response.body(Body::Stream(body))),
            // The link came from this isolate's memo, and garbage collection (in another
            // isolate) has since removed the blob: it is unknown, not broken.
            None => {
                self.memo.forget_link(name.as_str(), &digest.to_string());
                Err(blob_unknown(digest))
            }
        }
    }

    /// DELETE removes the repository's link; the bytes stay for other repositories.
    pub(crate) async fn delete_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<Response<O::Body>> {
        if !self.config.delete_enabled {
            return Err(
                RegistryError::new(ErrorCode::Unsupported).with_message("deletes are disabled on this registry")
            );
        }
        let Some(meta) = self.objects.head(&keys::blob_link(name, digest)).await? else {
            return Err(blob_unknown(digest));
        };
        let link = BlobLink::from_metadata(&meta.custom)
            .ok_or_else(|| RegistryError::internal(format!("blob link {} has no object metadata", meta.key)))?;
        self.unlink_blob(name, digest, &link).await?;
        self.record_event(Action::Delete, Target { digest: Some(digest.to_string()), ..Target::new(name) });
        Ok(Response::new(202).header("Content-Length", "0"))
    }

    /// Removes the blob `link` from the repository (its bytes stay for other repositories): the
    /// link, then its holder, so a holder says "linked" as long as the link exists.
    pub(crate) async fn unlink_blob(&self, name: &RepositoryName, digest: &Digest, link: &BlobLink) -> Result<()> {
        self.memo.forget_link(name.as_str(), &digest.to_string());
        self.objects.delete(&keys::blob_link(name, digest)).await?;
        self.memo.forget_link(name.as_str(), &digest.to_string());
        self.hold(name, digest, link, Hold::Unlinked).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(offset: u64, length: u64) -> RangeRequest {
        RangeRequest::Range(ByteRange { offset, length })
    }

    #[test]
    fn byte_ranges_are_read_as_rfc_9110_says() {
        let cases = [
            ("bytes=0-9", 100, r(0, 10)),
            ("bytes=90-200", 100, r(90, 10)),
            ("bytes=10-", 100, r(10, 90)),
            ("bytes=-5", 100, r(95, 5)),
            ("bytes=-500", 100, r(0, 100)),
            ("bytes=99-99", 100, r(99, 1)),
            ("bytes=100-", 100, RangeRequest::Unsatisfiable),
            ("bytes=100-200", 100, RangeRequest::Unsatisfiable),
            ("bytes=-0", 100, RangeRequest::Unsatisfiable),
            ("bytes=0-0", 0, RangeRequest::Unsatisfiable),
            ("bytes=5-1", 100, RangeRequest::Ignored),
            ("bytes=0-1,5-6", 100, RangeRequest::Ignored),
            ("items=0-1", 100, RangeRequest::Ignored),
            ("bytes=x-1", 100, RangeRequest::Ignored),
        ];
        for (header, size, expected) in cases {
            assert_eq!(parse_range(header, size), expected, "{header} of {size}");
        }
    }
}
