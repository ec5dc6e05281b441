//! Tags pushed before R2 held them live in KV alone. R2 is now their source of truth (see
//! `oci::tags`): tags/list, DELETE by digest and garbage collection read R2, so such a tag
//! would be missing from listings, and untagged collection would take its manifest. The cron
//! trigger therefore copies each tag that KV holds and R2 lacks into R2, a page of KV keys per
//! run, keeping where it stands in R2 (`keys::TAGS_MIGRATION`). Until the copy is done,
//! untagged collection removes no manifest.
//!
//! A tag pushed since is written to R2 first, so the copy never overwrites a newer tag: it
//! writes only where R2 has none.

use crate::registry::{Registry, Result};
use crate::storage::keys::{self, TagRecord};
use crate::storage::{KeyValueStore, ObjectStore, PutOptions};
use futures_util::future::join_all;

/// What the copy records once every KV key was looked at.
const DONE: &[u8] = b"done";

/// KV keys looked at per run: one listing. Each may cost an R2 read and write.
const KEYS_PER_RUN: u32 = 1000;

/// Most storage requests in flight (a Worker keeps at most six connections).
const CONCURRENCY: usize = 6;

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Whether every tag KV holds is in R2 (one R2 read).
    pub async fn tags_in_r2(&self) -> Result<bool> {
        Ok(self.objects.get_bytes(keys::TAGS_MIGRATION).await?.is_some_and(|(_, b)| b == DONE))
    }

    /// Copies the next page of KV-only tags into R2; `true` once none is left. Returns how many
    /// tags it copied as well.
    pub async fn copy_kv_tags_to_r2(&self) -> Result<(bool, usize)> {
        let cursor = match self.objects.get_bytes(keys::TAGS_MIGRATION).await? {
            Some((_, b)) if b == DONE => return Ok((true, 0)),
            Some((_, b)) => String::from_utf8(b).ok().filter(|c| !c.is_empty()),
            None => None,
        };
        let page = self.kv.list(keys::KV_TAGS_PREFIX, cursor.as_deref(), KEYS_PER_RUN).await?;
        let mut copied = 0;
        for batch in page.keys.chunks(CONCURRENCY) {
            let results = join_all(batch.iter().map(|key| async move {
                let Some((name, tag)) = keys::tag_of_kv_key(&key.name) else { return Ok(false) };
                let Some(record) = key.metadata.as_ref().and_then(TagRecord::from_json) else { return Ok(false) };
                if self.stored_tag(&name, &tag).await?.is_some() {
                    return Ok(false);
                }
                let options = PutOptions { custom: record.to_metadata(), ..PutOptions::default() };
                self.objects.put(&keys::tag_object(&name, &tag), Vec::new(), options).await?;
                Ok::<bool, crate::base::error::RegistryError>(true)
            }))
            .await;
            for copied_one in results {
                copied += usize::from(copied_one?);
            }
        }
        let (done, progress) = match page.cursor {
            Some(c) => (false, c.into_bytes()),
            None => (true, DONE.to_vec()),
        };
        self.objects.put(keys::TAGS_MIGRATION, progress, PutOptions::default()).await?;
        Ok((done, copied))
    }
}
