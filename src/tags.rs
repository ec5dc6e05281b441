//! Tags: KV entries `tag -> digest`, with the manifest's digest, media type and size in the
//! entry's metadata so that a listing needs no per-tag reads.

use crate::error::RegistryError;
use crate::keys;
use crate::names::{Digest, RepositoryName, Tag};
use crate::registry::{Registry, Result};
use crate::storage::{KeyValueStore, ObjectStore};
use serde::{Deserialize, Serialize};

/// What a tag points at (the KV metadata of `tags/<name>:<tag>`; well under KV's 1024 bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// The digest a tag points at, if the tag exists. (KV is eventually consistent: another
    /// location may still see the previous digest for up to a minute.)
    pub(crate) async fn resolve_tag(&self, name: &RepositoryName, tag: &Tag) -> Result<Option<Digest>> {
        let Some(entry) = self.kv.get(&keys::tag(name, tag)).await? else {
            return Ok(None);
        };
        Digest::parse(&entry.value)
            .map(Some)
            .map_err(|_| RegistryError::internal(format!("tag {name}:{tag} holds a malformed digest")))
    }

    pub(crate) async fn put_tag(&self, name: &RepositoryName, tag: &Tag, record: &TagRecord) -> Result<()> {
        let meta = serde_json::to_value(record).map_err(RegistryError::internal)?;
        Ok(self.kv.put(&keys::tag(name, tag), &record.digest, Some(&meta)).await?)
    }

    pub(crate) async fn delete_tag(&self, name: &RepositoryName, tag: &Tag) -> Result<()> {
        Ok(self.kv.delete(&keys::tag(name, tag)).await?)
    }

    /// Every tag of a repository with the digest it points at, in lexical order.
    pub(crate) async fn all_tags(&self, name: &RepositoryName) -> Result<Vec<(Tag, String)>> {
        let prefix = keys::tag_prefix(name);
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.kv.list(&prefix, cursor.as_deref(), 1000).await?;
            for key in page.keys {
                let digest = key.metadata.and_then(|m| serde_json::from_value::<TagRecord>(m).ok()).map(|r| r.digest);
                let Ok(tag) = Tag::parse(&key.name[prefix.len()..]) else {
                    crate::log::error(&format!("ignoring KV key {} with an invalid tag", key.name));
                    continue;
                };
                let digest = match digest {
                    Some(d) => d,
                    // Metadata is written with every tag; a key without it is read the slow way.
                    None => self.kv.get(&key.name).await?.map(|e| e.value).unwrap_or_default(),
                };
                out.push((tag, digest));
            }
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }
}
