//! Tags. Each lives twice: in R2 (`keys::tag_object`), the source of truth, strongly
//! consistent, listed by tags/list, DELETE by digest and garbage collection; and in KV
//! (`keys::tag`), the fast path of pulls, read in one operation at the edge. Both carry the
//! tag record (digest, media type, size), so that neither a listing nor a HEAD needs a
//! per-tag read.

use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::{Response, query_param};
use crate::base::names::{Digest, MAX_NAME_LEN, MAX_TAG_LEN, RepositoryName, Tag};
use crate::base::pagination::{listing_start, next_link, page_size};
use crate::registry::{Registry, Result, json_response};
use crate::storage::keys::{self, TagRecord};
use crate::storage::{KeyValueStore, ListFrom, Listing, ObjectStore, PutOptions};
use futures_util::future::{join, join_all};
use serde::Serialize;
use serde_json::json;

/// Most tag reads a DELETE by digest has in flight (a Worker keeps at most six connections).
const CONCURRENCY: usize = 6;

/// An entry of the index of tags by manifest whose tag names another manifest is taken for a
/// left-over once this old: a push writes the entry and then its tag within a request.
const LEFT_OVER_AFTER_MS: u64 = 10 * 60 * 1000;

/// 403 DENIED: not a malformed manifest (MANIFEST_INVALID) but a refused change.
fn immutable(tag: &Tag, what: &str) -> RegistryError {
    RegistryError::new(ErrorCode::Denied)
        .with_message(format!("tag {tag} is immutable and cannot be {what}; push a new tag instead"))
        .with_detail(json!({ "tag": tag.as_str() }))
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Refuses to move an immutable tag that exists to `digest` (setting it, or re-pushing the
    /// same digest, is fine). `current` is the tag as stored in R2, which every location sees
    /// at once.
    pub(crate) fn check_tag_move(
        &self,
        name: &RepositoryName,
        tag: &Tag,
        current: Option<&TagRecord>,
        digest: &Digest,
    ) -> Result<()> {
        match current {
            Some(c) if c.digest != digest.to_string() && self.config.immutable_tags.protects(name, tag) => {
                Err(immutable(tag, "moved"))
            }
            _ => Ok(()),
        }
    }

    /// Refuses to delete an immutable tag.
    pub(crate) fn check_tag_delete(&self, name: &RepositoryName, tag: &Tag) -> Result<()> {
        match self.config.immutable_tags.protects(name, tag) {
            true => Err(immutable(tag, "deleted")),
            false => Ok(()),
        }
    }

    /// What a tag points at, for a pull: the isolate's memo, else KV's copy (one read, its
    /// metadata carrying the manifest's media type and size), else the tag in R2. KV caches
    /// what a location read, misses included, for 60 s or more, so a tag pushed elsewhere a
    /// moment ago is a KV miss here: R2, strongly consistent, has the last word on a miss.
    /// (A tag moved elsewhere may still read as its previous digest here for that long: an
    /// older manifest, still valid.)
    pub(crate) async fn tag_record(&self, name: &RepositoryName, tag: &Tag) -> Result<Option<TagRecord>> {
        let now = self.now_secs();
        if let Some(record) = self.memo.tag(name.as_str(), tag.as_str(), now) {
            return Ok(Some(record));
        }
        let read_at = self.memo.generation();
        let record = match self.kv.get(&keys::tag(name, tag)).await? {
            // wharf writes metadata with every tag; an entry without it still names the digest.
            Some(entry) => entry.metadata.as_ref().and_then(TagRecord::from_json).unwrap_or(TagRecord {
                digest: entry.value,
                media_type: String::new(),
                size: 0,
                cached_at: None,
            }),
            None => match self.stored_tag(name, tag).await? {
                Some(record) => record,
                None => return Ok(None),
            },
        };
        record.digest()?;
        self.memo.remember_tag(name.as_str(), tag.as_str(), &record, now, Some(read_at));
        Ok(Some(record))
    }

    /// The tag as stored in R2, the source of truth: one read that every location sees alike.
    pub(crate) async fn stored_tag(&self, name: &RepositoryName, tag: &Tag) -> Result<Option<TagRecord>> {
        let Some(meta) = self.objects.head(&keys::tag_object(name, tag)).await? else { return Ok(None) };
        let record = TagRecord::from_metadata(&meta.custom)
            .ok_or_else(|| RegistryError::internal(format!("tag object {} holds no tag record", meta.key)))?;
        record.digest()?;
        Ok(Some(record))
    }

    /// Points a tag at a manifest: R2 first, the source of truth, then KV's copy for pulls, and
    /// the entry of a manifest it moved from in the index of tags by manifest goes. The caller
    /// entered it in that index first ([`Registry::index_tag`]). `stored` is what R2 held
    /// before, when the caller read it: the same record is not written again. KV's copy is
    /// always written: a location cannot tell from its own, possibly stale, KV reads whether KV
    /// holds it.
    pub(crate) async fn put_tag(
        &self,
        name: &RepositoryName,
        tag: &Tag,
        record: &TagRecord,
        stored: Option<&TagRecord>,
    ) -> Result<()> {
        let moved_from = stored.filter(|s| s.digest != record.digest).map(TagRecord::digest).transpose()?;
        if stored != Some(record) {
            let options = PutOptions { custom: record.to_metadata(), ..PutOptions::default() };
            self.objects.put(&keys::tag_object(name, tag), Vec::new(), options).await?;
        }
        let (kv_key, kv_metadata) = (keys::tag(name, tag), record.to_json());
        let copy = self.kv.put(&kv_key, &record.digest, Some(&kv_metadata));
        let unindex = async {
            match &moved_from {
                Some(old) => self.objects.delete(&keys::tagged(name, old, tag)).await,
                None => Ok(()),
            }
        };
        let (copied, unindexed) = join(copy, unindex).await;
        copied?;
        unindexed?;
        self.memo.remember_tag(name.as_str(), tag.as_str(), record, self.now_secs(), None);
        Ok(())
    }

    /// Enters a tag about to name manifest `digest` (R2 held `stored`) in the index of tags by
    /// manifest, unless it names it already: before [`Registry::put_tag`] writes the tag, so that
    /// a DELETE by digest finds it from then on.
    pub(crate) async fn index_tag(
        &self,
        name: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        stored: Option<&TagRecord>,
    ) -> Result<()> {
        if stored.is_none_or(|s| s.digest != digest.to_string()) {
            self.objects.put(&keys::tagged(name, digest, tag), Vec::new(), PutOptions::default()).await?;
        }
        Ok(())
    }

    /// Writes a tag as the upstream of a pull-through cache has it, without reading what R2
    /// holds (an entry of the manifest it named before stays until a DELETE by digest meets it).
    pub(crate) async fn cache_tag(&self, name: &RepositoryName, tag: &Tag, record: &TagRecord) -> Result<()> {
        self.index_tag(name, tag, &record.digest()?, None).await?;
        self.put_tag(name, tag, record, None).await
    }

    /// Removes a tag that names manifest `digest`: KV's copy first, then R2's, so that a delete
    /// stopped half-way leaves a tag that still exists (R2) and a retry that finds it; then its
    /// entry in the index of tags by manifest.
    pub(crate) async fn delete_tag(&self, name: &RepositoryName, tag: &Tag, digest: &Digest) -> Result<()> {
        self.memo.forget_tag(name.as_str(), tag.as_str());
        self.kv.delete(&keys::tag(name, tag)).await?;
        self.objects.delete(&keys::tag_object(name, tag)).await?;
        self.memo.forget_tag(name.as_str(), tag.as_str());
        self.objects.delete(&keys::tagged(name, digest, tag)).await?;
        Ok(())
    }

    /// The tags that name manifest `digest`. Once the index of tags by manifest is complete
    /// (see `migrate`), from one listing of it, each entry checked against its tag (an entry
    /// outlives a tag that moved while its push stopped half-way): what the manifest's tags
    /// cost, however many the repository has. Before, from every tag of the repository.
    pub(crate) async fn tags_of(&self, name: &RepositoryName, digest: &Digest) -> Result<Vec<Tag>> {
        if !self.indexes_written().await? {
            let target = digest.to_string();
            let all = self.all_tags(name).await?.into_iter();
            return Ok(all.filter(|(_, r)| r.digest == target).map(|(t, _)| t).collect());
        }
        self.indexed_tags_of(name, digest).await
    }

    /// [`Registry::tags_of`] once the index of tags by manifest is complete.
    pub(crate) async fn indexed_tags_of(&self, name: &RepositoryName, digest: &Digest) -> Result<Vec<Tag>> {
        let target = digest.to_string();
        let prefix = keys::tagged_prefix(name, digest);
        let mut listing = Listing::new(prefix.as_str());
        let mut indexed = Vec::new();
        while let Some(meta) = listing.next(&self.objects).await? {
            indexed.extend(keys::tag_of(&meta.key, &prefix).map(|t| (t, meta.uploaded_ms)));
        }
        let now = self.now_ms();
        let mut tags = Vec::with_capacity(indexed.len());
        for batch in indexed.chunks(CONCURRENCY) {
            let records = join_all(batch.iter().map(|(t, _)| self.stored_tag(name, t))).await;
            for ((tag, written), record) in batch.iter().zip(records) {
                match record? {
                    Some(r) if r.digest == target => tags.push(tag.clone()),
                    // Moved or gone: the entry is left over, unless a push is about to write
                    // its tag (entries go first); then it stays for the next delete to look at.
                    _ if written + LEFT_OVER_AFTER_MS < now => {
                        self.objects.delete(&keys::tagged(name, digest, tag)).await?
                    }
                    _ => {}
                }
            }
        }
        Ok(tags)
    }

    /// Every tag of a repository with its record, in lexical order, from R2.
    pub(crate) async fn all_tags(&self, name: &RepositoryName) -> Result<Vec<(Tag, TagRecord)>> {
        let prefix = keys::tag_objects_prefix(name);
        let mut out = Vec::new();
        let mut listing = Listing::new(prefix.as_str());
        while let Some(meta) = listing.next(&self.objects).await? {
            match (keys::tag_of(&meta.key, &prefix), TagRecord::from_metadata(&meta.custom)) {
                (Some(tag), Some(record)) => out.push((tag, record)),
                _ => crate::base::log::error(&format!("ignoring {}: not a tag", meta.key)),
            }
        }
        Ok(out)
    }
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// GET /v2/<name>/tags/list?n=&last=: tags in lexical (byte) order, `last` exclusive, a
    /// `Link` to the next page when more exist. A page is one R2 listing of the repository's
    /// tags, starting after `last`: any page costs what the first one costs.
    pub(crate) async fn list_tags(
        &self,
        name: &RepositoryName,
        query: &[(String, String)],
    ) -> Result<Response<O::Body>> {
        let n = page_size(query_param(query, "n"), self.config.max_page)?;
        let prefix = keys::tag_objects_prefix(name);
        let mut tags: Vec<String> = Vec::new();
        let mut more = false;
        if n > 0 {
            let after = query_param(query, "last").map(|last| format!("{prefix}{}", listing_start(last, MAX_TAG_LEN)));
            let from = after.as_deref().map_or(ListFrom::Beginning, ListFrom::After);
            let page = self.objects.list(&prefix, from, n as u32).await?;
            tags = page.objects.iter().filter_map(|o| keys::tag_of(&o.key, &prefix)).map(|t| t.to_string()).collect();
            more = page.cursor.is_some();
        }
        if tags.is_empty() && !self.repository_exists(name).await? {
            return Err(RegistryError::new(ErrorCode::NameUnknown).with_detail(json!({ "name": name.as_str() })));
        }
        let body =
            serde_json::to_vec(&TagList { name: name.as_str(), tags: &tags }).map_err(RegistryError::internal)?;
        let mut response = json_response(body, false);
        if let (true, Some(last)) = (more, tags.last()) {
            let path = format!("/v2/{name}/tags/list");
            let n = n.to_string();
            response = response.header("Link", next_link(&path, &[("n", n.as_str()), ("last", last.as_str())]));
        }
        Ok(response)
    }

    /// Whether the repository holds any manifest (its catalog entry exists).
    pub(crate) async fn repository_exists(&self, name: &RepositoryName) -> Result<bool> {
        Ok(self.objects.head(&keys::catalog_entry(name)).await?.is_some())
    }

    /// GET /v2/_catalog?n=&last=: repositories holding at least one manifest that the caller
    /// may pull (`visible`), in lexical order, starting after `last`.
    ///
    /// The `Link` to the next page names the last repository *shown*: a name the caller may
    /// not see never reaches it, in the body or in a link. A page the rules thin out is filled
    /// from the listings after it, [`CATALOG_SCAN_PAGES`] at most; a longer run of hidden names
    /// ends the caller's listing there.
    pub(crate) async fn catalog(
        &self,
        query: &[(String, String)],
        visible: &dyn Fn(&RepositoryName) -> bool,
    ) -> Result<Response<O::Body>> {
        let n = page_size(query_param(query, "n"), self.config.max_page)?;
        let mut names = Vec::new();
        let mut more = false;
        let mut after = query_param(query, "last").map(|last| keys::catalog_key(listing_start(last, MAX_NAME_LEN)));
        'scan: for _ in 0..if n > 0 { CATALOG_SCAN_PAGES } else { 0 } {
            let from = after.as_deref().map_or(ListFrom::Beginning, ListFrom::After);
            let page = self.objects.list(keys::CATALOG_PREFIX, from, n as u32).await?;
            for object in page.objects {
                if let Some(name) = keys::repository_of(&object.key).filter(|r| visible(r)) {
                    if names.len() == n {
                        more = true;
                        break 'scan;
                    }
                    names.push(name);
                }
                after = Some(object.key);
            }
            more = page.cursor.is_some();
            if !more || names.len() == n {
                break;
            }
        }
        let shown: Vec<&str> = names.iter().map(RepositoryName::as_str).collect();
        let body = serde_json::to_vec(&Catalog { repositories: &shown }).map_err(RegistryError::internal)?;
        let mut response = json_response(body, false);
        if let (true, Some(last)) = (more, shown.last()) {
            let n = n.to_string();
            response = response.header("Link", next_link("/v2/_catalog", &[("n", &n), ("last", last)]));
        }
        Ok(response)
    }
}

/// Most listings of the catalog one page makes looking for repositories the caller may see.
const CATALOG_SCAN_PAGES: usize = 10;

/// `GET /v2/<name>/tags/list` (distribution-spec "Listing Tags").
#[derive(Serialize)]
struct TagList<'a> {
    name: &'a str,
    tags: &'a [String],
}

/// `GET /v2/_catalog` (Distribution's catalog API).
#[derive(Serialize)]
struct Catalog<'a> {
    repositories: &'a [&'a str],
}
