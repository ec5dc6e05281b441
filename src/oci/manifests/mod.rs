//! `/v2/<name>/manifests/<reference>`: GET, HEAD, PUT and DELETE, behaviour for behaviour
//! after CNCF Distribution v3's registry/handlers/manifests.go, with the spec's stricter
//! rules where distribution-spec v1.1 asks for more (each marked "spec:").

pub mod format;

use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::{Body, BodyReader, Headers, Response};
use crate::base::names::{Digest, Reference, RepositoryName, Tag};
use crate::base::router::manifest_url;
use crate::config::notify::Action;
use crate::config::{GcMode, MAX_MANIFEST_SIZE};
use crate::oci::blobs::BlobLink;
use crate::oci::caching;
use crate::registry::events::Target;
use crate::registry::{Registry, Result, read_limited};
use crate::storage::keys::{self, TagRecord};
use crate::storage::{KeyValueStore, ListFrom, ObjectMeta, ObjectStore, PutOptions};
use format::{Accepted, Descriptor, LayerSource, Manifest, MediaType, default_platform_child};
use futures_util::future::{join, join_all, join3};
use serde_json::json;
use std::collections::HashMap;
use std::rc::Rc;

/// A manifest as [`Registry::load_manifest`] found it.
struct Loaded {
    media_type: MediaType,
    size: u64,
    /// The bytes, unless only the metadata was asked for (HEAD).
    bytes: Option<Rc<Vec<u8>>>,
}

/// 405 UNSUPPORTED: `WHARF_DELETE_ENABLED` is off.
pub(crate) fn deletes_disabled() -> RegistryError {
    RegistryError::new(ErrorCode::Unsupported).with_message("deletes are disabled on this registry")
}

fn manifest_unknown() -> RegistryError {
    RegistryError::new(ErrorCode::ManifestUnknown)
}

/// Refuses a manifest type the client did not ask for (the OCI types; a Docker manifest list
/// by tag is resolved to one image instead, and schema2 is served to anyone, as Distribution).
fn refuse_unaccepted(media_type: MediaType, accepted: &Accepted) -> Result<()> {
    match media_type {
        MediaType::OciManifest if !accepted.accepts(MediaType::OciManifest) => {
            Err(manifest_unknown().with_message("OCI manifest found, but accept header does not support OCI manifests"))
        }
        // Distribution v3 never reaches its matching check for indexes (its index type is no
        // longer a manifest list) and serves them to anyone. wharf applies the check: the spec
        // leaves the choice open, and an index sent to a client that did not ask for one is as
        // unreadable to it as an OCI manifest would be.
        MediaType::OciIndex if !accepted.accepts(MediaType::OciIndex) => {
            Err(manifest_unknown().with_message("OCI index found, but accept header does not support OCI indexes"))
        }
        _ => Ok(()),
    }
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// GET and HEAD.
    pub(crate) async fn get_manifest(
        &self,
        name: &RepositoryName,
        reference: &Reference,
        headers: &Headers,
        head: bool,
    ) -> Result<Response<O::Body>> {
        let accepted = Accepted::from_headers(headers.get_all("accept"));
        let record = match reference {
            Reference::Tag(tag) => Some(
                match &self.config.upstream {
                    Some(up) => self.resolve_tag_through(up, name, tag).await?,
                    None => self.tag_record(name, tag).await?,
                }
                .ok_or_else(manifest_unknown)?,
            ),
            Reference::Digest(_) => None,
        };
        let mut digest = match (&record, reference) {
            (Some(r), _) => r.digest()?,
            (None, Reference::Digest(d)) => d.clone(),
            (None, Reference::Tag(_)) => return Err(manifest_unknown()),
        };
        let by_tag = record.is_some();
        let cache_control = if by_tag { self.cache_by_tag(name) } else { self.cache_immutable(name) };
        let answer = |status: u16, digest: &Digest| {
            Response::new(status)
                .header("Docker-Content-Digest", digest.to_string())
                .header("ETag", caching::etag(digest))
                .header("Cache-Control", cache_control.clone())
                // The answer depends on what the client accepts.
                .header("Vary", "Accept")
        };
        if caching::none_match(headers, &digest) {
            // By tag the tag vouches for the manifest; by digest it must still exist (RFC 9110
            // §13.1.2: If-None-Match is false when there is no current representation). The
            // 304 names the manifest's type: caches may refresh their copy's fields from it
            // (RFC 9111 §4.3.4), and a typed answer is one Cloudflare's front never encodes.
            let media_type = match record.as_ref().and_then(TagRecord::media_type) {
                Some(t) => t,
                None => self.load_manifest(name, &digest, true).await?.ok_or_else(manifest_unknown)?.media_type,
            };
            return Ok(answer(304, &digest).header("Content-Type", media_type.as_str()));
        }
        // HEAD by tag: the tag's metadata holds all the answer needs; R2 is not asked (unless a
        // manifest list must be resolved to one image).
        if head
            && let Some(media_type) = record.as_ref().and_then(TagRecord::media_type)
            && (media_type != MediaType::DockerManifestList || accepted.accepts(media_type))
        {
            refuse_unaccepted(media_type, &accepted)?;
            let size = record.as_ref().map_or(0, |r| r.size);
            return Ok(answer(200, &digest)
                .header("Content-Type", media_type.as_str())
                .header("Content-Length", size.to_string()));
        }
        let mut manifest = match self.load_manifest(name, &digest, head).await? {
            Some(m) => m,
            // KV's copy of the tag may be stale in this location (the tag moved elsewhere and
            // its old manifest is gone): the tag in R2 has the last word.
            None => match (reference, &self.config.upstream) {
                (Reference::Tag(tag), None) => {
                    self.memo.forget_tag(name.as_str(), tag.as_str());
                    let stored = self.stored_tag(name, tag).await?;
                    let current = stored.filter(|r| r.digest != digest.to_string()).ok_or_else(manifest_unknown)?;
                    digest = current.digest()?;
                    self.load_manifest(name, &digest, head).await?.ok_or_else(manifest_unknown)?
                }
                _ => return Err(manifest_unknown()),
            },
        };
        refuse_unaccepted(manifest.media_type, &accepted)?;

        // A client that cannot read manifest lists gets, by tag, the linux/amd64 image.
        if manifest.media_type == MediaType::DockerManifestList
            && by_tag
            && !accepted.accepts(MediaType::DockerManifestList)
        {
            let list = match manifest.bytes {
                Some(bytes) => bytes,
                None => self
                    .load_manifest(name, &digest, false)
                    .await?
                    .and_then(|m| m.bytes)
                    .ok_or_else(manifest_unknown)?,
            };
            let child = default_platform_child(&list).ok_or_else(manifest_unknown)?;
            manifest = self.load_manifest(name, &child, head).await?.ok_or_else(manifest_unknown)?;
            if manifest.media_type == MediaType::DockerManifest && !accepted.accepts(MediaType::DockerManifest) {
                return Err(RegistryError::new(ErrorCode::ManifestInvalid)
                    .with_message("Schema 2 manifest not supported by client"));
            }
            digest = child;
        }

        let response = answer(200, &digest)
            .header("Content-Type", manifest.media_type.as_str())
            .header("Content-Length", manifest.size.to_string());
        if !head {
            let tag = match reference {
                Reference::Tag(t) => Some(t.as_str()),
                Reference::Digest(_) => None,
            };
            self.record_event(Action::Pull, Target::manifest(name, &digest, manifest.media_type, manifest.size, tag));
        }
        Ok(match manifest.bytes {
            Some(bytes) => response.body(Body::Bytes(bytes.to_vec())),
            None => response,
        })
    }

    /// A manifest's type and size, and for GET its bytes: from the isolate's memo, else from R2
    /// (remembered for the next time). A cache fetches a manifest it does not hold from its
    /// upstream first. Manifests are small (at most 4 MiB), so they are read whole.
    async fn load_manifest(&self, name: &RepositoryName, digest: &Digest, head: bool) -> Result<Option<Loaded>> {
        let now = self.now_secs();
        if let Some(m) = self.memo.manifest(name.as_str(), &digest.to_string(), now) {
            return Ok(Some(Loaded { media_type: m.media_type, size: m.bytes.len() as u64, bytes: Some(m.bytes) }));
        }
        let key = keys::manifest(name, digest);
        let load = || async {
            if head {
                let Some(meta) = self.objects.head(&key).await? else { return Ok(None) };
                return Ok(Some(Loaded { media_type: stored_media_type(&meta)?, size: meta.size, bytes: None }));
            }
            let read_at = self.memo.generation();
            let Some((meta, bytes)) = self.objects.get_bytes(&key).await? else { return Ok(None) };
            let media_type = stored_media_type(&meta)?;
            self.memo.remember_manifest(name.as_str(), &digest.to_string(), media_type, &bytes, now, Some(read_at));
            Ok(Some(Loaded { media_type, size: bytes.len() as u64, bytes: Some(Rc::new(bytes)) }))
        };
        match (load().await?, &self.config.upstream) {
            (None, Some(up)) if self.pull_manifest(up, name, &Reference::Digest(digest.clone())).await?.is_some() => {
                load().await
            }
            (found, _) => Ok(found),
        }
    }

    /// PUT: verify, store the bytes in R2, then point the tag at them in KV.
    pub(crate) async fn put_manifest<B: BodyReader<Raw = O::Upload>>(
        &self,
        name: &RepositoryName,
        reference: &Reference,
        extra_tags: &[Tag],
        token_classes: &[String],
        headers: &Headers,
        body: &mut B,
    ) -> Result<Response<O::Body>> {
        // spec: "accept at least 4 MB, reject larger with 413". Refuse early when the client
        // announces the size; read_limited enforces it for chunked bodies.
        if headers.content_length().is_some_and(|l| l > MAX_MANIFEST_SIZE as u64) {
            return Err(
                RegistryError::new(ErrorCode::PayloadTooLarge).with_detail(json!({ "limit": MAX_MANIFEST_SIZE }))
            );
        }
        let bytes = read_limited(body, MAX_MANIFEST_SIZE).await?;
        // Malformed reference digests are reported with every other missing reference below.
        let manifest = Manifest::read(headers.get("content-type"), &bytes)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                if expected.recompute(&bytes) != *expected {
                    return Err(RegistryError::new(ErrorCode::DigestInvalid)
                        .with_detail(json!({ "expected": expected.to_string() })));
                }
                expected.clone()
            }
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        self.apply_resource_policy(&manifest, token_classes)?;
        // The URL's tag and any `?tag=` (spec main branch).
        let url_tag = match reference {
            Reference::Tag(tag) => Some(tag),
            Reference::Digest(_) => None,
        };
        let tags: Vec<&Tag> = url_tag.into_iter().chain(extra_tags).collect();

        // One round trip of reads, side by side, decides what the push must write: the
        // references (from the isolate's memory of blob links where it has them), the tags as
        // R2 holds them (immutable ones may not move; one already pointing here is not written
        // again), and whether the manifest and the referrer entry are stored already.
        // Content-addressed bytes never change, so what is stored is not written again: on R2
        // a write (Class A) costs twelve reads (Class B).
        let referrer_key = manifest.subject.as_ref().map(|s| keys::referrer(name, &s.digest, &digest));
        let (verified, stored_tags, stored) = join3(
            self.verify_references(name, &manifest, Lookup::Memo),
            join_all(tags.iter().map(|t| self.stored_tag(name, t))),
            join(self.exists(Some(keys::manifest(name, &digest))), self.exists(referrer_key)),
        )
        .await;
        verified?;
        let stored_tags = stored_tags.into_iter().collect::<Result<Vec<_>>>()?;
        for (tag, current) in tags.iter().zip(&stored_tags) {
            self.check_tag_move(name, tag, current.as_ref(), &digest)?;
        }
        let (existed, referred) = (stored.0?, stored.1?);

        let size = bytes.len() as u64;
        let collecting = self.config.gc == GcMode::On;
        let copy = collecting.then(|| bytes.clone());
        // The index of tags by manifest beside the bytes: an entry ahead of its tag is harmless
        // (see `tags_of`), a tag without its entry would outlive a DELETE by digest.
        let tagged: Vec<(&Tag, Option<&TagRecord>)> =
            tags.iter().copied().zip(stored_tags.iter().map(Option::as_ref)).collect();
        let indexing = join_all(tagged.iter().map(|(tag, stored)| self.index_tag(name, tag, &digest, *stored)));
        let (written, indexed) = match existed {
            false => join(self.write_manifest(name, &digest, bytes, &manifest), indexing).await,
            // Stored: the next pull from this isolate needs no R2 read all the same.
            true => {
                self.remember_manifest(name, &digest, &bytes, &manifest);
                (Ok(()), indexing.await)
            }
        };
        written?;
        indexed.into_iter().collect::<Result<Vec<()>>>()?;
        if let Some(bytes) = &copy {
            self.recheck_after_write(name, &digest, &manifest, existed, bytes.clone()).await?;
        }
        self.index_manifest(name, &digest, &manifest, size, &tagged, referred).await?;
        if let Some(bytes) = copy {
            self.recheck_after_tagging(name, &digest, &manifest, bytes).await?;
        }
        let event =
            |tag: Option<&&Tag>| Target::manifest(name, &digest, manifest.media_type, size, tag.map(|t| t.as_str()));
        match tags.is_empty() {
            true => self.record_event(Action::Push, event(None)),
            false => tags.iter().for_each(|t| self.record_event(Action::Push, event(Some(t)))),
        }

        let mut response = Response::new(201)
            .header("Location", manifest_url(name, &digest))
            .header("Docker-Content-Digest", digest.to_string())
            .header("Content-Length", "0");
        // spec: a manifest with a subject is answered with OCI-Subject.
        if let Some(subject) = &manifest.subject {
            response = response.header("OCI-Subject", subject.digest.to_string());
        }
        // spec (main): each tag set by a `?tag=` parameter is confirmed with OCI-Tag. A client
        // that does not see it assumes the parameter was ignored and pushes the tag again by
        // tag, which names the sha256 digest: the tags of a sha512 push would then lose it.
        for tag in extra_tags {
            response = response.header("OCI-Tag", tag.as_str());
        }
        Ok(response)
    }

    /// With garbage collection on, a written manifest's blobs and children are checked again
    /// before any tag points at it: a collection may have swept one after the first check (see
    /// `gc`). Then the write is taken back (unless the manifest was there before) and the push
    /// refused. A manifest swept as untagged meanwhile is written again.
    async fn recheck_after_write(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        manifest: &Manifest,
        existed: bool,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let key = keys::manifest(name, digest);
        let (verified, still_here) =
            join(self.verify_references(name, manifest, Lookup::Storage), self.objects.head(&key)).await;
        if let Err(e) = verified {
            if !existed {
                self.memo.forget_manifest(name.as_str(), &digest.to_string());
                self.objects.delete(&key).await?;
                self.memo.forget_manifest(name.as_str(), &digest.to_string());
            }
            return Err(e);
        }
        if still_here?.is_none() {
            self.write_manifest(name, digest, bytes, manifest).await?;
        }
        Ok(())
    }

    /// With garbage collection on, a tagged manifest is checked once more after its tags are
    /// written: a collection that listed the tags before they were written may have taken the
    /// manifest as untagged (a re-tag of an old manifest writes no bytes). Either this check
    /// follows that delete and writes the manifest again, or the tag was written before the
    /// collection's own re-check of the tags, which puts the manifest back (see `gc`).
    async fn recheck_after_tagging(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        manifest: &Manifest,
        bytes: Vec<u8>,
    ) -> Result<()> {
        if self.objects.head(&keys::manifest(name, digest)).await?.is_none() {
            self.write_manifest(name, digest, bytes, manifest).await?;
        }
        Ok(())
    }

    /// Stores a verified manifest: the bytes first, then, the bytes being in place, the catalog
    /// entry, the referrer entry and the tags.
    pub(crate) async fn store_manifest(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        bytes: Vec<u8>,
        manifest: &Manifest,
        tags: &[&Tag],
    ) -> Result<()> {
        let size = bytes.len() as u64;
        let tagged: Vec<(&Tag, Option<&TagRecord>)> = tags.iter().map(|t| (*t, None)).collect();
        let indexing = join_all(tagged.iter().map(|(tag, _)| self.index_tag(name, tag, digest, None)));
        let (written, indexed) = join(self.write_manifest(name, digest, bytes, manifest), indexing).await;
        written?;
        indexed.into_iter().collect::<Result<Vec<()>>>()?;
        self.index_manifest(name, digest, manifest, size, &tagged, false).await
    }

    /// Writes the manifest's bytes.
    async fn write_manifest(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        bytes: Vec<u8>,
        manifest: &Manifest,
    ) -> Result<()> {
        let options = PutOptions { content_type: Some(manifest.media_type.as_str().to_owned()), ..Default::default() };
        self.objects.put(&keys::manifest(name, digest), bytes.clone(), options).await?;
        // Stored: the next pull from this isolate needs no R2 read.
        self.remember_manifest(name, digest, &bytes, manifest);
        Ok(())
    }

    fn remember_manifest(&self, name: &RepositoryName, digest: &Digest, bytes: &[u8], manifest: &Manifest) {
        let now = self.now_secs();
        self.memo.remember_manifest(name.as_str(), &digest.to_string(), manifest.media_type, bytes, now, None);
    }

    /// Whether an object is stored under `key` (`false` without a key).
    async fn exists(&self, key: Option<String>) -> Result<bool> {
        match key {
            Some(key) => Ok(self.objects.head(&key).await?.is_some()),
            None => Ok(false),
        }
    }

    /// Makes a stored manifest findable: the catalog entry, the referrer entry (unless
    /// `referred` already) and the tags (with what R2 held of each), side by side.
    ///
    /// The catalog entry is looked for only now, with the manifest in place: a DELETE of the
    /// repository's last manifest drops the entry and then looks at the manifests again (see
    /// `drop_catalog_entry_if_empty`). Either that second look sees this manifest and puts the
    /// entry back, or it came first and this look sees the entry gone and writes it.
    async fn index_manifest(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        manifest: &Manifest,
        size: u64,
        tags: &[(&Tag, Option<&TagRecord>)],
        referred: bool,
    ) -> Result<()> {
        let catalog = async {
            if !self.repository_exists(name).await? {
                self.objects.put(&keys::catalog_entry(name), Vec::new(), PutOptions::default()).await?;
            }
            Ok::<(), RegistryError>(())
        };
        let referrer = async {
            match (&manifest.subject, referred) {
                (Some(subject), false) => self.record_referrer(name, &subject.digest, digest, manifest, size).await,
                _ => Ok(()),
            }
        };
        let record = TagRecord {
            digest: digest.to_string(),
            media_type: manifest.media_type.as_str().to_owned(),
            size,
            cached_at: None,
        };
        let tagging = join_all(tags.iter().map(|(t, stored)| self.put_tag(name, t, &record, *stored)));
        let (catalogued, referred, tagged) = join3(catalog, referrer, tagging).await;
        catalogued?;
        referred?;
        tagged.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    /// Distribution's applyResourcePolicy. With allowed classes configured, an image manifest's
    /// class (from its config media type) must be one of them, and when the client's token names
    /// this repository (`repository(plugin):name:push`; a plain `repository` is "image"), one of
    /// those entries must be of that class.
    fn apply_resource_policy(&self, manifest: &Manifest, token_classes: &[String]) -> Result<()> {
        let allowed = &self.config.allowed_classes;
        if allowed.is_empty() {
            return Ok(());
        }
        let denied = |m: String| Err(RegistryError::new(ErrorCode::Denied).with_message(m));
        match manifest.class() {
            Ok(None) => Ok(()),
            Ok(Some(class)) if !allowed.iter().any(|c| c == class) => {
                denied(format!("registry does not allow {class} manifest"))
            }
            Ok(Some(class)) if !token_classes.is_empty() && !token_classes.iter().any(|c| c == class) => {
                denied(format!("repository not authorized for manifest class {class}"))
            }
            Ok(Some(_)) => Ok(()),
            Err(config_type) => denied(format!("unknown manifest class for {config_type}")),
        }
    }

    /// Every config and layer must be a blob of this repository, of the size its descriptor
    /// gives, and every list or index child a manifest of it; the lookups run concurrently, not
    /// one round trip after another. Layers that may live elsewhere follow [`LayerSource`].
    /// Every reference that fails is reported, in document order, each with
    /// MANIFEST_BLOB_UNKNOWN naming its digest, as Distribution's verifyManifest does: a client
    /// learns from one answer all it must upload. A malformed digest is DIGEST_INVALID and
    /// MANIFEST_BLOB_UNKNOWN.
    /// spec: the `subject` is not checked, it MAY not exist yet.
    async fn verify_references(&self, name: &RepositoryName, manifest: &Manifest, lookup: Lookup) -> Result<()> {
        let is_list = manifest.media_type.is_list();
        let mut valid = manifest.config.iter().chain(&manifest.references);
        let mut malformed = manifest.malformed.iter().peekable();
        let total = manifest.config.iter().count() + manifest.references.len() + manifest.malformed.len();
        let mut checks = Vec::with_capacity(total);
        for position in 0..total {
            if let Some((_, digest)) = malformed.next_if(|(p, _)| *p == position) {
                checks.push(Check::Malformed(digest));
                continue;
            }
            let Some(d) = valid.next() else { break };
            let check = if is_list {
                Check::Child(d)
            } else if position == 0 {
                Check::Blob(d)
            } else {
                let source = LayerSource::of(manifest.media_type, &d.media_type);
                let refused = match source {
                    LayerSource::Blob => None,
                    _ => d.urls.iter().find_map(|u| self.config.manifest_urls.refuse(u).map(|why| (u, why))),
                };
                match (source, refused) {
                    (_, Some((url, why))) => Check::Refused(d, Some(url.as_str()), why),
                    // Distribution's errMissingURL.
                    (LayerSource::Urls, None) if d.urls.is_empty() => {
                        Check::Refused(d, None, "a foreign layer needs at least one URL")
                    }
                    (LayerSource::Urls, None) => Check::Elsewhere,
                    (LayerSource::UrlsOrBlob, None) if !d.urls.is_empty() => Check::Elsewhere,
                    _ => Check::Blob(d),
                }
            };
            checks.push(check);
        }
        // Each digest is looked up once, however many descriptors name it (a layer given
        // twice, the same child for two platforms).
        let mut lookups: Vec<&Check> = Vec::new();
        for c in &checks {
            if c.looked_up().is_some_and(|d| !lookups.iter().any(|l| l.looked_up() == Some(d))) {
                lookups.push(c);
            }
        }
        // Many lookups in storage are cheaper as listings of the repository's blob links or
        // manifests, a thousand keys a page, when a few pages hold them all: a push of an image
        // of a hundred layers then stays within the Free plan's 50 subrequests.
        let now = self.now_secs();
        let from_storage =
            |d: &Digest| lookup == Lookup::Storage || self.memo.link(name.as_str(), &d.to_string(), now).is_none();
        let blobs = lookups.iter().filter(|c| matches!(c, Check::Blob(d) if from_storage(&d.digest))).count();
        let children = lookups.iter().filter(|c| matches!(c, Check::Child(_))).count();
        let read_at = self.memo.generation();
        let (links, manifests) = join(
            self.listed_when_many(&keys::blob_links_prefix(name), blobs),
            self.listed_when_many(&keys::manifests_prefix(name), children),
        )
        .await;
        let (links, manifests) = (links?, manifests?);
        // What each lookup found: `None` nothing, `Some(size)` a blob of that size or a child
        // (whose size is not checked).
        let results = join_all(lookups.iter().map(|c| {
            let (links, manifests) = (&links, &manifests);
            async move {
                let found: Result<Option<u64>> = match (c, links, manifests) {
                    (Check::Blob(d), Some(listed), _) if from_storage(&d.digest) => {
                        let link = listed.get(&keys::blob_link(name, &d.digest));
                        let link = link.and_then(|meta| BlobLink::from_metadata(&meta.custom));
                        // Remembered as a read of the link would be (see `stored_blob_link`).
                        if let Some(l) = &link {
                            let d = d.digest.to_string();
                            self.memo.remember_link(name.as_str(), &d, &l.object, l.size, now, Some(read_at));
                        }
                        Ok(link.map(|l| l.size))
                    }
                    (Check::Blob(d), _, _) => match lookup {
                        Lookup::Memo => Ok(self.blob_link(name, &d.digest).await?.map(|l| l.size)),
                        Lookup::Storage => Ok(self.stored_blob_link(name, &d.digest).await?.map(|l| l.size)),
                    },
                    (Check::Child(d), _, Some(listed)) => {
                        Ok(listed.get(&keys::manifest(name, &d.digest)).map(|m| m.size))
                    }
                    (Check::Child(d), _, None) => {
                        Ok(self.objects.head(&keys::manifest(name, &d.digest)).await?.map(|m| m.size))
                    }
                    _ => Ok(None),
                };
                found
            }
        }))
        .await;
        let mut looked_up = Vec::with_capacity(lookups.len());
        for (c, result) in lookups.iter().zip(results) {
            looked_up.push((c.looked_up(), result?));
        }
        // Per check: `None` when nothing was looked up, else what the lookup of its digest found.
        let found = checks.iter().map(|c| {
            let digest = c.looked_up();
            looked_up.iter().find(|(l, _)| digest.is_some() && *l == digest).map(|(_, size)| *size)
        });
        let mut errors = Vec::new();
        for (check, found) in checks.iter().zip(found) {
            let unknown = |digest: &dyn std::fmt::Display| {
                RegistryError::new(ErrorCode::ManifestBlobUnknown).with_detail(digest.to_string())
            };
            match (check, found) {
                (Check::Malformed(digest), _) => {
                    errors.push(format::invalid_reference(digest));
                    errors.push(unknown(digest));
                }
                (Check::Refused(d, Some(url), why), _) => errors.push(
                    RegistryError::new(ErrorCode::ManifestBlobUnknown)
                        .with_message(format!("invalid URL on layer: {why}"))
                        .with_detail(json!({ "digest": d.digest.to_string(), "url": url })),
                ),
                (Check::Refused(d, None, why), _) => errors.push(
                    RegistryError::new(ErrorCode::ManifestBlobUnknown)
                        .with_message(*why)
                        .with_detail(json!({ "digest": d.digest.to_string() })),
                ),
                (Check::Blob(d) | Check::Child(d), Some(None)) => errors.push(unknown(&d.digest)),
                (Check::Blob(d), Some(Some(blob_size))) if blob_size != d.size => errors.push(
                    RegistryError::new(ErrorCode::ManifestBlobUnknown)
                        .with_message("the descriptor's size is not the blob's")
                        .with_detail(json!({
                            "digest": d.digest.to_string(),
                            "size": d.size,
                            "blobSize": blob_size,
                        })),
                ),
                _ => {}
            }
        }
        match RegistryError::all(errors) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The objects under `prefix`, by key, when `lookups` of them are due and a few listings
    /// hold them all; `None` when fewer are due (reading each is cheaper) or the listings
    /// would not end (the repository holds too many: each is read instead).
    async fn listed_when_many(&self, prefix: &str, lookups: usize) -> Result<Option<HashMap<String, ObjectMeta>>> {
        if lookups <= LIST_INSTEAD_OF_READING {
            return Ok(None);
        }
        let mut listed = HashMap::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LOOKUP_LISTINGS {
            let from = cursor.as_deref().map_or(ListFrom::Beginning, ListFrom::Cursor);
            let page = self.objects.list(prefix, from, 1000).await?;
            listed.extend(page.objects.into_iter().map(|o| (o.key.clone(), o)));
            cursor = page.cursor;
            if cursor.is_none() {
                return Ok(Some(listed));
            }
        }
        Ok(None)
    }

    /// DELETE by tag untags; by digest removes the manifest and every tag pointing at it.
    pub(crate) async fn delete_manifest(
        &self,
        name: &RepositoryName,
        reference: &Reference,
    ) -> Result<Response<O::Body>> {
        if !self.config.delete_enabled {
            return Err(deletes_disabled());
        }
        match reference {
            Reference::Tag(tag) => {
                let Some(record) = self.tag_record(name, tag).await? else {
                    return Err(manifest_unknown().with_detail(json!({ "tag": tag.as_str() })));
                };
                self.check_tag_delete(name, tag)?;
                self.delete_tag(name, tag, &record.digest()?).await?;
                self.record_event(Action::Delete, Target { tag: Some(tag.to_string()), ..Target::new(name) });
            }
            Reference::Digest(digest) => {
                // Order matters for a delete stopped half-way (a storage error, the Worker
                // stopping): whatever points at the manifest goes first, so that no tag or
                // referrer entry is ever left pointing at a manifest that is gone, and a retry
                // finds the manifest and finishes the job.
                //   1. the tags pointing at it;  2. its referrer entry;  3. the manifest bytes;
                //   4. the catalog entry, if it was the repository's last manifest.
                let key = keys::manifest(name, digest);
                let Some((_, bytes)) = self.objects.get_bytes(&key).await? else {
                    return Err(manifest_unknown());
                };
                let target = digest.to_string();
                let tags = self.tags_of(name, digest).await?;
                // Deleting the manifest would delete its tags: not if one is immutable.
                tags.iter().try_for_each(|t| self.check_tag_delete(name, t))?;
                for tag in &tags {
                    self.delete_tag(name, tag, digest).await?;
                }
                if let Some(subject) = format::subject_of(&bytes) {
                    self.forget_referrer(name, &subject, digest).await?;
                }
                self.memo.forget_manifest(name.as_str(), &target);
                self.objects.delete(&key).await?;
                self.memo.forget_manifest(name.as_str(), &target);
                self.drop_catalog_entry_if_empty(name).await?;
                self.record_event(Action::Delete, Target { digest: Some(target), ..Target::new(name) });
            }
        }
        Ok(Response::new(202).header("Content-Length", "0"))
    }

    /// Takes the repository out of the catalog once its last manifest is gone. A push may
    /// have found the entry just before it went and written a manifest since: the manifests are
    /// listed again after the delete, and the entry put back if one is there (see
    /// `index_manifest` for the push's side).
    pub(crate) async fn drop_catalog_entry_if_empty(&self, name: &RepositoryName) -> Result<()> {
        if !self.has_manifests(name).await? {
            self.objects.delete(&keys::catalog_entry(name)).await?;
            if self.has_manifests(name).await? {
                self.objects.put(&keys::catalog_entry(name), Vec::new(), PutOptions::default()).await?;
            }
        }
        Ok(())
    }

    async fn has_manifests(&self, name: &RepositoryName) -> Result<bool> {
        let page = self.objects.list(&keys::manifests_prefix(name), ListFrom::Beginning, 1).await?;
        Ok(!page.objects.is_empty())
    }
}

/// Above this many lookups of one kind, a push lists instead of reading each (see
/// `listed_when_many`).
const LIST_INSTEAD_OF_READING: usize = 8;

/// Most listings (of 1,000 keys) a push makes instead of reading each reference.
const MAX_LOOKUP_LISTINGS: usize = 3;

/// Where [`Registry::verify_references`] looks blob links up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// The isolate's memory first, then storage.
    Memo,
    /// Storage only: garbage collection's re-check must see what a sweep took since.
    Storage,
}

/// What [`Registry::verify_references`] does about one config, layer or child.
enum Check<'a> {
    /// Its digest is malformed (as given).
    Malformed(&'a str),
    /// A config or layer: a blob of the repository, of the descriptor's size.
    Blob(&'a Descriptor),
    /// A list or index child: a manifest of the repository.
    Child(&'a Descriptor),
    /// A layer whose `urls` break the rules: this URL (`None`: it has none), for this reason.
    Refused(&'a Descriptor, Option<&'a str>, &'static str),
    /// A layer fetched from its URLs: nothing to look up.
    Elsewhere,
}

impl Check<'_> {
    /// The digest this check looks up in storage, if any.
    fn looked_up(&self) -> Option<&Digest> {
        match self {
            Check::Blob(d) | Check::Child(d) => Some(&d.digest),
            _ => None,
        }
    }
}

/// The media type a manifest was stored with; anything else means the bucket was written by
/// something other than wharf.
fn stored_media_type(meta: &ObjectMeta) -> Result<MediaType> {
    meta.content_type
        .as_deref()
        .and_then(MediaType::parse)
        .ok_or_else(|| RegistryError::internal(format!("manifest {} stored without a known media type", meta.key)))
}
