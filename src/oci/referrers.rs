//! `GET /v2/<name>/referrers/<digest>`: the manifests of a repository whose `subject` is
//! `<digest>`, as an OCI image index (distribution-spec v1.1 "Listing Referrers").
//!
//! Each pushed manifest with a subject leaves an empty R2 object under the subject's prefix
//! (see `keys`) whose custom metadata is its descriptor, so a page of referrers is one R2
//! listing, not one read per referrer. Annotations too large for R2's 8 KiB of metadata are
//! read from the manifest itself.

use crate::base::de::Members;
use crate::base::error::RegistryError;
use crate::base::http::{Body, Response, query_param};
use crate::base::names::{Digest, RepositoryName};
use crate::base::pagination::next_link;
use crate::oci::manifests::format::{self, Manifest, MediaType};
use crate::registry::{Registry, Result};
use crate::storage::keys;
use crate::storage::{KeyValueStore, ListFrom, Metadata, ObjectStore, PutOptions};
use futures_util::future::join_all;
use serde::Serialize;

/// Largest annotations kept inline in the referrer entry's custom metadata. R2 holds 8 KiB of
/// it, the local simulator 2 KiB; with the other fields (a media type, a size, an artifact type
/// of at most 255 bytes) this fits both. Larger annotations are read from the manifest.
const MAX_INLINE_ANNOTATIONS: usize = 1024;
const ANNOTATIONS_IN_MANIFEST: &str = "manifest";

/// Manifests a page of referrers reads at most, for annotations kept in the manifest alone.
pub const MANIFEST_READS_PER_PAGE: usize = 20;

/// The referrers of a subject, an OCI image index (distribution-spec "Listing Referrers").
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersIndex {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<ReferrerDescriptor>,
}

/// A descriptor of the referrers index; absent fields are left out.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Members<String>>,
}

/// The artifact type a referrer is listed with: the manifest's own, else (image manifests
/// only) its config's media type; an index without one has none (spec).
pub fn artifact_type(manifest: &Manifest) -> Option<String> {
    manifest
        .artifact_type
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| manifest.config.as_ref().map(|c| c.media_type.clone()))
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Records `digest` (just stored, `size` bytes) as a referrer of its subject.
    pub(crate) async fn record_referrer(
        &self,
        name: &RepositoryName,
        subject: &Digest,
        digest: &Digest,
        manifest: &Manifest,
        size: u64,
    ) -> Result<()> {
        let mut custom = Metadata::new();
        custom.insert("mediaType", manifest.media_type.as_str());
        custom.insert("size", size.to_string());
        if let Some(t) = artifact_type(manifest) {
            custom.insert("artifactType", t);
        }
        if let Some(a) = manifest.annotations.as_ref().filter(|a| !a.is_empty()) {
            let json = serde_json::to_string(&Members(a.clone())).map_err(RegistryError::internal)?;
            let value = if json.len() <= MAX_INLINE_ANNOTATIONS { json } else { ANNOTATIONS_IN_MANIFEST.to_owned() };
            custom.insert("annotations", value);
        }
        let options = PutOptions { custom, ..Default::default() };
        self.objects.put(&keys::referrer(name, subject, digest), Vec::new(), options).await?;
        Ok(())
    }

    pub(crate) async fn forget_referrer(&self, name: &RepositoryName, subject: &Digest, digest: &Digest) -> Result<()> {
        Ok(self.objects.delete(&keys::referrer(name, subject, digest)).await?)
    }

    /// GET: 200 with an index, never 404 (spec MUST); an unknown subject has no referrers.
    /// `artifactType=` filters (answered with `OCI-Filters-Applied`); `Link` to the next page
    /// (spec: a registry MAY page the referrers). A page is one listing and at most
    /// [`MANIFEST_READS_PER_PAGE`] manifest reads: within the Free plan's 50 subrequests.
    pub(crate) async fn list_referrers(
        &self,
        name: &RepositoryName,
        subject: &Digest,
        query: &[(String, String)],
    ) -> Result<Response<O::Body>> {
        let filter = query_param(query, "artifactType");
        let prefix = keys::referrers_prefix(name, subject);
        // Where this page starts: a listing's cursor, or after the referrer a page cut short
        // ended with (see below).
        let after = query_param(query, "after").map(|d| Digest::parse(d).map(|d| keys::referrer(name, subject, &d)));
        let from = match (&after, query_param(query, "cursor")) {
            (Some(after), _) => ListFrom::After(after.as_ref().map_err(Clone::clone)?),
            (None, Some(cursor)) => ListFrom::Cursor(cursor),
            (None, None) => ListFrom::Beginning,
        };
        let page = self.objects.list(&prefix, from, self.config.max_page as u32).await?;
        let mut listed: Vec<_> = page
            .objects
            .iter()
            .filter_map(|o| Some((keys::referrer_of(&o.key, &prefix)?, &o.custom)))
            .filter(|(_, meta)| filter.is_none_or(|f| meta.get("artifactType").map(String::as_str) == Some(f)))
            .collect();
        // A page reads at most MANIFEST_READS_PER_PAGE manifests, for annotations that were too
        // large to keep inline: past it the page ends, and the next one starts after it.
        let reads = listed.iter().scan(0, |reads, (_, meta)| {
            *reads += usize::from(meta.get("annotations").map(String::as_str) == Some(ANNOTATIONS_IN_MANIFEST));
            Some(*reads)
        });
        let cut = reads.take_while(|&reads| reads <= MANIFEST_READS_PER_PAGE).count();
        let cut_after = (cut < listed.len()).then(|| listed[cut - 1].0.to_string());
        listed.truncate(cut);
        // Annotations too large to be inline are read from the manifests, side by side.
        let annotations = join_all(listed.iter().map(|(digest, meta)| async move {
            match meta.get("annotations").map(String::as_str) {
                None => Ok(None),
                Some(ANNOTATIONS_IN_MANIFEST) => self.annotations_of(name, digest).await,
                Some(json) => serde_json::from_str::<Members<String>>(json)
                    .map(|m| Some(m.0))
                    .map_err(|_| RegistryError::internal("malformed referrer annotations")),
            }
        }))
        .await;
        let mut manifests = Vec::with_capacity(listed.len());
        for ((digest, meta), annotations) in listed.into_iter().zip(annotations) {
            manifests.push(ReferrerDescriptor {
                media_type: meta.get("mediaType").cloned().unwrap_or_default(),
                digest: digest.to_string(),
                size: meta.get("size").and_then(|s| s.parse::<u64>().ok()).unwrap_or_default(),
                artifact_type: meta.get("artifactType").cloned(),
                annotations: annotations?.map(Members),
            });
        }
        let index = ReferrersIndex { schema_version: 2, media_type: MediaType::OciIndex.as_str(), manifests };
        let body = serde_json::to_vec(&index).map_err(RegistryError::internal)?;
        let mut response = Response::new(200)
            .header("Content-Type", MediaType::OciIndex.as_str())
            .header("Content-Length", body.len().to_string());
        if filter.is_some() {
            response = response.header("OCI-Filters-Applied", "artifactType");
        }
        let next = match (&cut_after, &page.cursor) {
            (Some(last), _) => Some(("after", last.as_str())),
            (None, Some(cursor)) => Some(("cursor", cursor.as_str())),
            (None, None) => None,
        };
        if let Some(next) = next {
            let path = format!("/v2/{name}/referrers/{subject}");
            let mut params = vec![next];
            if let Some(f) = filter {
                params.push(("artifactType", f));
            }
            response = response.header("Link", next_link(&path, &params));
        }
        Ok(response.body(Body::Bytes(body)))
    }

    /// The annotations of a stored manifest (for referrers whose annotations did not fit).
    async fn annotations_of(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<Vec<(String, String)>>> {
        let Some((_, bytes)) = self.objects.get_bytes(&keys::manifest(name, digest)).await? else { return Ok(None) };
        Ok(format::annotations_of(&bytes))
    }
}
