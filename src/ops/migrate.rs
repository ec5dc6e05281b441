//! Tags pushed before R2 held them live in KV alone. R2 is now their source of truth (see
//! `oci::tags`): tags/list, DELETE by digest and garbage collection read R2, so such a tag
//! would be missing from listings, and untagged collection would take its manifest. The cron
//! trigger therefore copies each tag that KV holds and R2 lacks into R2, some thousands per run,
//! keeping where it stands in R2 (`keys::TAGS_MIGRATION`). Until the copy is done, untagged
//! collection removes no manifest.
//!
//! A tag pushed since is written to R2 first, so the copy never overwrites a newer tag: it
//! writes only where R2 has none.
//!
//! Likewise blob links and index entries written before holders existed (`keys`, "holders")
//! have none, and tags written before the index of tags by manifest (`_tagged`) have no entry
//! there. Garbage collection writes them, a step at a time, before it first removes bytes; until
//! then DELETE by digest reads every tag of the repository.

use crate::base::names::{Digest, RepositoryName, Tag};
use crate::oci::blobs::BlobLink;
use crate::registry::{Registry, Result};
use crate::storage::keys::{self, Holder, RepositoryKey, TagRecord};
use crate::storage::{KeyValueStore, ListFrom, Metadata, ObjectMeta, ObjectStore, PutOptions};
use futures_util::future::join_all;
use std::collections::HashSet;

/// What the copy records once every KV key was looked at.
const DONE: &[u8] = b"done";

/// KV keys in a listing, and listings per run: a run looks at up to 4,000 tags, with a listing
/// of R2's copies per 200 tags of a repository, and writes those R2 lacks (two writes each: the
/// tag and its `_tagged` entry), stopping after the listing in which it reached 400 writes: a
/// run stays within a step of garbage collection (1,000 operations), which runs it too.
const KEYS_PER_PAGE: u32 = 200;
const PAGES_PER_RUN: usize = 20;
const WRITES_PER_RUN: usize = 400;

/// Entries a step of the indexes migration writes at most, and listings it reads at most.
const HOLDERS_PER_STEP: usize = 400;
const LISTINGS_PER_STEP: usize = 20;

/// Most storage requests in flight (a Worker keeps at most six connections).
const CONCURRENCY: usize = 6;

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Whether every tag KV holds is in R2 (one R2 read).
    pub async fn tags_in_r2(&self) -> Result<bool> {
        Ok(self.objects.get_bytes(keys::TAGS_MIGRATION).await?.is_some_and(|(_, b)| b == DONE))
    }

    /// Copies the next KV-only tags into R2 (see [`PAGES_PER_RUN`]);
    /// `true` once none is left. Returns how many tags it copied as well.
    pub async fn copy_kv_tags_to_r2(&self) -> Result<(bool, usize)> {
        let mut cursor = match self.objects.get_bytes(keys::TAGS_MIGRATION).await? {
            Some((_, b)) if b == DONE => return Ok((true, 0)),
            Some((_, b)) => String::from_utf8(b).ok().filter(|c| !c.is_empty()),
            None => None,
        };
        let mut copied = 0;
        for _ in 0..PAGES_PER_RUN {
            let page = self.kv.list(keys::KV_TAGS_PREFIX, cursor.as_deref(), KEYS_PER_PAGE).await?;
            // KV lists in key order, `tags/<name>:<tag>`: a repository's tags come together, in
            // the order R2 lists them.
            let mut tags: Vec<(RepositoryName, Tag, TagRecord)> = page
                .keys
                .iter()
                .filter_map(|k| {
                    let (name, tag) = keys::tag_of_kv_key(&k.name)?;
                    Some((name, tag, k.metadata.as_ref().and_then(TagRecord::from_json)?))
                })
                .collect();
            while !tags.is_empty() {
                let name = tags[0].0.clone();
                let split = tags.iter().position(|(n, _, _)| *n != name).unwrap_or(tags.len());
                let rest = tags.split_off(split);
                copied += self.copy_missing(&name, tags).await?;
                tags = rest;
            }
            cursor = page.cursor;
            if cursor.is_none() || 2 * copied >= WRITES_PER_RUN {
                break;
            }
        }
        let (done, progress) = match cursor {
            Some(c) => (false, c.into_bytes()),
            None => (true, DONE.to_vec()),
        };
        self.objects.put(keys::TAGS_MIGRATION, progress, PutOptions::default()).await?;
        Ok((done, copied))
    }

    /// Writes to R2 those of one repository's `tags` (in tag order) that R2 lacks, found with
    /// listings of its tags from the first one on rather than a read each.
    async fn copy_missing(&self, name: &RepositoryName, tags: Vec<(RepositoryName, Tag, TagRecord)>) -> Result<usize> {
        let (Some(first), Some(last)) = (tags.first(), tags.last()) else { return Ok(0) };
        let prefix = keys::tag_objects_prefix(name);
        let mut from = format!("{prefix}{}", just_before(first.1.as_str()));
        let mut held = HashSet::new();
        loop {
            let listed = self.objects.list(&prefix, ListFrom::After(&from), 1000).await?;
            let Some(end) = listed.objects.last().map(|o| o.key.clone()) else { break };
            held.extend(listed.objects.into_iter().filter_map(|o| keys::tag_of(&o.key, &prefix)));
            if listed.cursor.is_none() || keys::tag_of(&end, &prefix).is_some_and(|t| t.as_str() >= last.1.as_str()) {
                break;
            }
            from = end;
        }
        let missing: Vec<_> = tags.iter().filter(|(_, tag, _)| !held.contains(tag)).collect();
        for batch in missing.chunks(CONCURRENCY) {
            let writes = batch.iter().map(|(_, tag, record)| async move {
                // Its entry in the index of tags by manifest first, as a push writes them.
                self.index_tag(name, tag, &record.digest()?, None).await?;
                let options = PutOptions { custom: record.to_metadata(), ..PutOptions::default() };
                self.objects.put(&keys::tag_object(name, tag), Vec::new(), options).await?;
                Ok::<_, crate::base::error::RegistryError>(())
            });
            for written in join_all(writes).await {
                written?;
            }
        }
        Ok(missing.len())
    }
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Whether every blob link and index entry has its holder, and every tag its `_tagged`
    /// entry (one R2 read).
    pub async fn indexes_written(&self) -> Result<bool> {
        Ok(self.objects.get_bytes(keys::INDEXES_MIGRATION).await?.is_some_and(|(_, b)| b == DONE))
    }

    /// Writes the holders of the next index entries, then blob links, and the `_tagged` entries
    /// of tags, after the key `after` (see `keys`): what was written before them has none, and
    /// garbage collection would take bytes still linked. Returns where the next step starts,
    /// `None` once done (then recorded, so later collections skip it). Index entries list first
    /// (`digests/` sorts before `repositories/`).
    pub async fn write_missing_indexes(&self, after: Option<String>) -> Result<Option<String>> {
        let mut after = after;
        // The entries to write, up to HOLDERS_PER_STEP, from listings of up to 1,000 keys (R2
        // may answer fewer when it includes metadata).
        let mut entries: Vec<(String, Metadata)> = Vec::new();
        let mut next = None;
        for _ in 0..LISTINGS_PER_STEP {
            let prefix = match &after {
                Some(key) if key.starts_with(keys::REPOSITORIES_PREFIX) => keys::REPOSITORIES_PREFIX,
                _ => keys::BLOB_INDEX_PREFIX,
            };
            let from = after.as_deref().filter(|key| key.starts_with(prefix));
            let page = self.objects.list(prefix, from.map_or(ListFrom::Beginning, ListFrom::After), 1000).await?;
            let mut looked_at = 0;
            for meta in &page.objects {
                if entries.len() == HOLDERS_PER_STEP {
                    break;
                }
                entries.extend(index_entry_of(meta));
                looked_at += 1;
            }
            let more = page.cursor.is_some() || looked_at < page.objects.len();
            after = match (page.objects[..looked_at].last(), more) {
                (Some(last), true) => Some(last.key.clone()),
                // The index is done: the links and tags next.
                _ if prefix == keys::BLOB_INDEX_PREFIX => Some(keys::REPOSITORIES_PREFIX.to_owned()),
                _ => None,
            };
            next = after.clone();
            if next.is_none() || entries.len() == HOLDERS_PER_STEP {
                break;
            }
        }
        for batch in entries.chunks(CONCURRENCY) {
            let writes = batch.iter().map(|(key, custom)| {
                self.objects.put(key, Vec::new(), PutOptions { custom: custom.clone(), ..PutOptions::default() })
            });
            for written in join_all(writes).await {
                written?;
            }
        }
        if next.is_none() {
            self.objects.put(keys::INDEXES_MIGRATION, DONE.to_vec(), PutOptions::default()).await?;
        }
        Ok(next)
    }
}

/// The entry a listed index entry, blob link (their holder) or tag calls for, with its metadata.
fn index_entry_of(meta: &ObjectMeta) -> Option<(String, Metadata)> {
    if let Some((name, RepositoryKey::Tag(tag))) = keys::parse_repository_key(&meta.key) {
        let digest = TagRecord::from_metadata(&meta.custom)?.digest().ok()?;
        return Some((keys::tagged(&name, &digest, &tag), Metadata::new()));
    }
    let link = BlobLink::from_metadata(&meta.custom)?;
    let upload = keys::upload_of_object(&link.object)?;
    let (digest, who) = match keys::parse_repository_key(&meta.key) {
        Some((name, RepositoryKey::BlobLink(digest))) => (digest, Holder::Repository(name)),
        Some(_) => return None,
        None => {
            let path = meta.key.strip_prefix(keys::BLOB_INDEX_PREFIX)?;
            (Digest::parse(&path.replacen('/', ":", 1)).ok()?, Holder::Index)
        }
    };
    Some((keys::holder(&upload, &who), [("digest", digest.to_string())].into_iter().collect()))
}

/// A key that sorts just before `tag`, with no tag between them: R2 lists after a key, and the
/// listing must start at `tag` itself. Tags are `[A-Za-z0-9_][A-Za-z0-9._-]*`, all below `~`.
fn just_before(tag: &str) -> String {
    let (head, last) = tag.split_at(tag.len() - 1);
    match last.as_bytes()[0] {
        // The smallest tag character: nothing sorts between `head` and `head-`.
        b'-' => head.to_owned(),
        c => format!("{head}{}~", char::from(c - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn just_before_a_tag_sorts_no_other_tag() {
        for (tag, lower) in [("t001000", "t000999zzz"), ("v1", "v0_"), ("ab-", "ab"), ("a", "Z")] {
            let key = just_before(tag);
            assert!(key.as_str() < tag, "{key} {tag}");
            // After `key`, exclusive: `lower`, a smaller tag, is left out.
            assert!(lower <= key.as_str(), "{lower} {key}");
        }
        assert_eq!(just_before("ab-"), "ab");
    }
}
