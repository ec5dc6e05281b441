//! Tags: KV entries `tag -> digest`, with the manifest's digest, media type and size in the
//! entry's metadata so that a listing needs no per-tag reads.

use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::{Response, query_param};
use crate::base::names::{Digest, RepositoryName, Tag};
use crate::base::pagination::{next_link, page_size};
use crate::registry::{Registry, Result, json_response};
use crate::storage::keys::{self, TagRecord};
use crate::storage::{KeyValueStore, ListFrom, ObjectStore};
use serde::Serialize;
use serde_json::json;

/// 403 DENIED: not a malformed manifest (MANIFEST_INVALID) but a refused change.
fn immutable(tag: &Tag, what: &str) -> RegistryError {
    RegistryError::new(ErrorCode::Denied)
        .with_message(format!("tag {tag} is immutable and cannot be {what}; push a new tag instead"))
        .with_detail(json!({ "tag": tag.as_str() }))
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Refuses to move an immutable tag that exists to `digest` (setting it, or re-pushing the
    /// same digest, is fine). KV being eventually consistent, a tag set in another location in
    /// the last minute may not be seen yet.
    pub(crate) async fn check_tag_move(&self, name: &RepositoryName, tag: &Tag, digest: &Digest) -> Result<()> {
        if !self.config.immutable_tags.protects(name, tag) {
            return Ok(());
        }
        match self.tag_record(name, tag).await? {
            Some(current) if current.digest != digest.to_string() => Err(immutable(tag, "moved")),
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

    /// What a tag points at, if the tag exists: one KV read, its metadata carrying the
    /// manifest's media type and size. (KV is eventually consistent: another location may still
    /// see the previous digest for up to a minute.)
    pub(crate) async fn tag_record(&self, name: &RepositoryName, tag: &Tag) -> Result<Option<TagRecord>> {
        let now = self.now_secs();
        if let Some(record) = self.memo.tag(name.as_str(), tag.as_str(), now) {
            return Ok(Some(record));
        }
        let read_at = self.memo.generation();
        let Some(entry) = self.kv.get(&keys::tag(name, tag)).await? else { return Ok(None) };
        let record = entry.metadata.as_ref().and_then(TagRecord::from_json);
        // wharf writes metadata with every tag; an entry without it still names the digest.
        let record =
            record.unwrap_or(TagRecord { digest: entry.value, media_type: String::new(), size: 0, cached_at: None });
        record.digest()?;
        self.memo.remember_tag(name.as_str(), tag.as_str(), &record, now, Some(read_at));
        Ok(Some(record))
    }

    pub(crate) async fn put_tag(&self, name: &RepositoryName, tag: &Tag, record: &TagRecord) -> Result<()> {
        self.kv.put(&keys::tag(name, tag), &record.digest, Some(&record.to_json())).await?;
        self.memo.remember_tag(name.as_str(), tag.as_str(), record, self.now_secs(), None);
        Ok(())
    }

    pub(crate) async fn delete_tag(&self, name: &RepositoryName, tag: &Tag) -> Result<()> {
        self.memo.forget_tag(name.as_str(), tag.as_str());
        self.kv.delete(&keys::tag(name, tag)).await?;
        self.memo.forget_tag(name.as_str(), tag.as_str());
        Ok(())
    }

    /// Every tag of a repository with the digest it points at, in lexical order.
    pub(crate) async fn all_tags(&self, name: &RepositoryName) -> Result<Vec<(Tag, String)>> {
        let prefix = keys::tag_prefix(name);
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.kv.list(&prefix, cursor.as_deref(), 1000).await?;
            for key in page.keys {
                let digest = key.metadata.as_ref().and_then(TagRecord::from_json).map(|r| r.digest);
                let Ok(tag) = Tag::parse(&key.name[prefix.len()..]) else {
                    crate::base::log::error(&format!("ignoring KV key {} with an invalid tag", key.name));
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

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// GET /v2/<name>/tags/list?n=&last=: tags in lexical (byte) order, `last` exclusive, a
    /// `Link` to the next page when more exist.
    ///
    /// A page is one KV listing: the `Link` carries KV's cursor next to `last`. KV cannot start
    /// a listing after a given key, so a `last` without our cursor (a client building its own
    /// URL) is served by listing from the start and skipping.
    pub(crate) async fn list_tags(
        &self,
        name: &RepositoryName,
        query: &[(String, String)],
    ) -> Result<Response<O::Body>> {
        let n = page_size(query_param(query, "n"), self.config.max_page)?;
        let last = query_param(query, "last");
        let prefix = keys::tag_prefix(name);
        let mut tags: Vec<String> = Vec::new();
        let mut next_cursor = None;
        let mut more = false;
        if n > 0 {
            match (query_param(query, "cursor"), last) {
                (cursor, None) | (cursor @ Some(_), Some(_)) => {
                    let page = self.kv.list(&prefix, cursor, n as u32).await?;
                    tags = page.keys.into_iter().filter_map(|k| valid_tag(&k.name, &prefix)).collect();
                    more = page.cursor.is_some();
                    next_cursor = page.cursor;
                }
                (None, Some(last)) => {
                    let mut cursor: Option<String> = None;
                    'pages: loop {
                        let page = self.kv.list(&prefix, cursor.as_deref(), 1000).await?;
                        for tag in page.keys.into_iter().filter_map(|k| valid_tag(&k.name, &prefix)) {
                            if tag.as_str() > last {
                                if tags.len() == n {
                                    more = true;
                                    break 'pages;
                                }
                                tags.push(tag);
                            }
                        }
                        match page.cursor {
                            Some(c) => cursor = Some(c),
                            None => break,
                        }
                    }
                }
            }
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
            let mut params = vec![("n", n.as_str()), ("last", last.as_str())];
            if let Some(c) = &next_cursor {
                params.push(("cursor", c.as_str()));
            }
            response = response.header("Link", next_link(&path, &params));
        }
        Ok(response)
    }

    /// Whether the repository holds any manifest (its catalog entry exists).
    pub(crate) async fn repository_exists(&self, name: &RepositoryName) -> Result<bool> {
        Ok(self.objects.head(&keys::catalog_entry(name)).await?.is_some())
    }

    /// GET /v2/_catalog?n=&last=: repositories holding at least one manifest that the caller
    /// may pull (`visible`), in lexical order; one R2 listing per page, starting after `last`.
    pub(crate) async fn catalog(
        &self,
        query: &[(String, String)],
        visible: &dyn Fn(&RepositoryName) -> bool,
    ) -> Result<Response<O::Body>> {
        let n = page_size(query_param(query, "n"), self.config.max_page)?;
        let mut listed = Vec::new();
        let mut more = false;
        if n > 0 {
            let after = query_param(query, "last").map(keys::catalog_key);
            let from = after.as_deref().map_or(ListFrom::Beginning, ListFrom::After);
            let page = self.objects.list(keys::CATALOG_PREFIX, from, n as u32).await?;
            listed = page.objects.iter().filter_map(|o| keys::repository_of(&o.key)).collect();
            more = page.cursor.is_some();
        }
        let names: Vec<&str> = listed.iter().filter(|r| visible(r)).map(RepositoryName::as_str).collect();
        let body = serde_json::to_vec(&Catalog { repositories: &names }).map_err(RegistryError::internal)?;
        let mut response = json_response(body, false);
        // The next page starts after the last repository listed, shown or not.
        if let (true, Some(last)) = (more, listed.last().map(RepositoryName::as_str)) {
            let n = n.to_string();
            response = response.header("Link", next_link("/v2/_catalog", &[("n", &n), ("last", last)]));
        }
        Ok(response)
    }
}

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

/// The tag of a listed KV key, if it is one (keys are written only by wharf, but a key that
/// does not parse is skipped rather than served).
fn valid_tag(key: &str, prefix: &str) -> Option<String> {
    key.strip_prefix(prefix).filter(|t| Tag::parse(t).is_ok()).map(str::to_owned)
}
