//! `/v2/<name>/blobs/<digest>`: GET, HEAD and DELETE.
//!
//! A repository holds a blob when its link object exists; the link names the object with the
//! bytes (see `keys`). A GET is two round trips: the link, then the bytes, streamed from R2 to
//! the client without passing through wasm memory.

use crate::error::{ErrorCode, RegistryError};
use crate::http::{Body, Response};
use crate::keys;
use crate::names::{Digest, RepositoryName};
use crate::registry::{Registry, Result};
use crate::storage::{KeyValueStore, ObjectStore, PutOptions};
use std::collections::BTreeMap;

/// Where a repository's blob lives and how big it is (custom metadata of its link object).
pub(crate) struct BlobLink {
    pub object: String,
    pub size: u64,
}

impl BlobLink {
    fn to_metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("object".to_owned(), self.object.clone()),
            ("size".to_owned(), self.size.to_string()),
        ])
    }
    fn from_metadata(m: &BTreeMap<String, String>) -> Option<Self> {
        Some(Self {
            object: m.get("object")?.clone(),
            size: m.get("size")?.parse().ok()?,
        })
    }
}

fn blob_unknown(digest: &Digest) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUnknown).with_detail(digest.to_string())
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    pub(crate) async fn blob_link(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<BlobLink>> {
        let Some(meta) = self.objects.head(&keys::blob_link(name, digest)).await? else {
            return Ok(None);
        };
        BlobLink::from_metadata(&meta.custom)
            .map(Some)
            .ok_or_else(|| RegistryError::internal(format!("blob link {} has no object metadata", meta.key)))
    }

    /// Makes the blob part of the repository.
    pub(crate) async fn link_blob(&self, name: &RepositoryName, digest: &Digest, link: &BlobLink) -> Result<()> {
        let options = PutOptions {
            custom: link.to_metadata(),
            ..Default::default()
        };
        self.objects
            .put(&keys::blob_link(name, digest), Vec::new(), options)
            .await?;
        Ok(())
    }

    pub(crate) async fn get_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        head: bool,
    ) -> Result<Response<O::Body>> {
        let link = self
            .blob_link(name, digest)
            .await?
            .ok_or_else(|| blob_unknown(digest))?;
        let response = |size: u64| {
            Response::new(200)
                // An explicit type: without it workerd and Cloudflare's edge compress the blob
                // for gzip-accepting clients, dropping Content-Length and burning CPU.
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", size.to_string())
                .header("Docker-Content-Digest", digest.to_string())
                .header("ETag", format!("\"{digest}\""))
        };
        if head {
            return Ok(response(link.size));
        }
        match self.objects.get(&link.object).await? {
            Some((meta, body)) => Ok(response(meta.size).body(Body::Stream(body))),
            None => Err(RegistryError::internal(format!(
                "blob {digest} of {name} links to missing {}",
                link.object
            ))),
        }
    }

    /// DELETE removes the repository's link; the bytes stay for other repositories.
    pub(crate) async fn delete_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<Response<O::Body>> {
        if !self.config.delete_enabled {
            return Err(
                RegistryError::new(ErrorCode::Unsupported).with_message("deletes are disabled on this registry")
            );
        }
        let key = keys::blob_link(name, digest);
        if self.objects.head(&key).await?.is_none() {
            return Err(blob_unknown(digest));
        }
        self.objects.delete(&key).await?;
        Ok(Response::new(202).header("Content-Length", "0"))
    }
}
