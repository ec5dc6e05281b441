//! Garbage collection: removes the blobs no manifest references and, with `WHARF_GC_UNTAGGED`,
//! the manifests no tag reaches. The cron trigger runs it (`WHARF_GC`), and so does
//! `POST /_wharf/gc` with the admin token, as a dry run unless asked otherwise.
//!
//! # Protocol
//! Distribution's collector needs the registry read-only while it runs. wharf keeps taking
//! pushes, and R2 has neither locks nor conditional deletes, so safety comes from the order of
//! operations on both sides.
//!
//! The collection, one repository at a time (from one listing of `repositories/`):
//! 1. **Mark.** Read every manifest. The live ones are all of them, or with
//!    `WHARF_GC_UNTAGGED` the tagged ones, the ones younger than the grace period, and what they
//!    reach (index children; referrers whose subject is live). Their configs and layers are
//!    referenced.
//! 2. **Sweep.** Remove the manifests that are not live and the blob links nothing references,
//!    only when older than the grace period (`WHARF_GC_GRACE_SECONDS`), and each only after a
//!    last HEAD shows it unchanged since the listing (a push rewrote it: it stays).
//! 3. **Re-check.** List the repository's manifests again. One that is new or rewritten since the
//!    mark (a push that checked its blobs before the sweep) gets back every link and child
//!    manifest the sweep took from under it.
//!
//! Then registry-wide:
//! 4. Index entries (`digests/`) naming bytes that no link names and older than the grace
//!    period go.
//! 5. A fresh listing of every link; byte objects that none names and older than the grace
//!    period go.
//!
//! The writers, when `WHARF_GC=on`, check again after writing:
//! - A manifest PUT checks its blobs and children again after writing the manifest and before
//!   any tag. If one is gone it undoes its write and answers MANIFEST_BLOB_UNKNOWN. Either that
//!   check follows the sweep's delete and sees it, or the manifest was written before the
//!   re-check (3), which restores what it needs. If its own manifest is gone (taken as
//!   untagged), it writes it again.
//! - A mount checks its source (the link or index entry it copied) again after linking. If the
//!   source is gone or changed, it removes its link and starts an upload session instead.
//!   Otherwise the source went after the mount's link was written, and the listing of step 5
//!   sees that link.
//! - Uploads write bytes under a key of their own (`keys::blob_by_upload`), never rewritten, so
//!   bytes the collection removes (listed, older than the grace period) are never new ones.
//!
//! A blob uploaded but not yet referenced (a push between its layers and its manifest) is
//! younger than the grace period, so it stays. A collection stopped half-way is safe: each step
//! removes only what nothing referenced when it looked, and the next run finishes the job. A
//! sweep writes down the links it may take before taking any (`keys::gc_sweep`) and drops the
//! record after its re-check, so a run that finds a record knows that re-check never ran. It
//! then puts back, while the bytes remain, each recorded link that a manifest needs. Only
//! recorded links come back: a blob a client deleted stays deleted (its bytes are kept while a
//! manifest references it).
//!
//! What remains open: the last HEAD and the delete of step 2 are two requests. A push that
//! rewrites the same link, or the same untagged manifest, exactly between them loses the
//! rewrite. For a link, the manifest PUT that follows is then refused (MANIFEST_BLOB_UNKNOWN) and
//! the client uploads again. For an untagged manifest, the window is one R2 round trip, and the
//! PUT's own re-check must also fall inside it.
//! Also, sweep records hold links only. With `WHARF_GC_UNTAGGED`, suppose a collection is stopped
//! between removing an untagged manifest and its re-check. An index pushed in that window, naming
//! the manifest as a child, then keeps a missing child.

use crate::base::de::Members;
use crate::base::error::RegistryError;
use crate::base::names::{Digest, RepositoryName};
use crate::oci::blobs::BlobLink;
use crate::oci::manifests::format::Manifest;
use crate::registry::{Registry, Result};
use crate::storage::keys::{self, RepositoryKey, TagRecord};
use crate::storage::{KeyValueStore, Listing, Metadata, ObjectMeta, ObjectStore, PutOptions};
use futures_util::future::join_all;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What a collection removed, or in a dry run would remove: what the admin endpoint answers
/// and the scheduled run logs.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub dry_run: bool,
    /// Untagged manifests, as `repository@digest`.
    pub manifests: Vec<String>,
    /// Blob links no manifest references, as `repository@digest`.
    pub blob_links: Vec<String>,
    /// Registry-wide index entries of blobs that are gone.
    pub index_entries: Vec<String>,
    /// Objects of blob bytes.
    pub blobs: Vec<RemovedBlob>,
    pub bytes_freed: u64,
    /// Links and manifests put back for a push that raced the sweep, as `repository@digest`.
    pub restored: Vec<String>,
    /// Links a stopped collection took from a manifest that needs them, put back.
    pub repaired: Vec<String>,
    /// Repositories left alone because one of their manifests could not be read.
    pub skipped: Vec<String>,
    /// With `WHARF_GC_UNTAGGED`: no manifest was collected as untagged, because tags kept in KV
    /// alone are still being copied to R2 (see `migrate`).
    pub untagged_deferred: bool,
}

#[derive(Debug, Serialize)]
pub struct RemovedBlob {
    pub object: String,
    pub size: u64,
}

impl GcReport {
    /// The report as a JSON value (for the log; the admin endpoint serialises the report itself,
    /// in field order).
    pub fn to_json(&self) -> serde_json::Value {
        // Strings, integers and lists of them always convert.
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// What a manifest references.
struct Refs {
    blobs: Vec<Digest>,
    children: Vec<Digest>,
    subject: Option<Digest>,
}

impl Refs {
    fn of(m: &Manifest) -> Self {
        Self {
            blobs: m.blobs().cloned().collect(),
            children: m.child_manifests().map(|c| c.digest.clone()).collect(),
            subject: m.subject.as_ref().map(|s| s.digest.clone()),
        }
    }
}

/// A manifest as the mark read it.
struct Marked {
    meta: ObjectMeta,
    bytes: Vec<u8>,
    refs: Refs,
}

/// Digest -> `T`, iterated in digest order. Every map and set of the collector is this one
/// type over one `BTreeMap<Digest, usize>`: a std map instantiated for each pair of types (and
/// the sort that collecting into one brings) cost the wasm KiBs each (docs/performance.md, "Size").
struct DigestMap<T> {
    index: BTreeMap<Digest, usize>,
    values: Vec<Option<T>>,
}

/// A set of digests.
type DigestSet = DigestMap<()>;

impl<T> DigestMap<T> {
    fn new() -> Self {
        Self { index: BTreeMap::new(), values: Vec::new() }
    }

    fn insert(&mut self, digest: Digest, value: T) {
        match self.index.get(&digest) {
            Some(&i) => self.values[i] = Some(value),
            None => {
                self.index.insert(digest, self.values.len());
                self.values.push(Some(value));
            }
        }
    }

    fn get(&self, digest: &Digest) -> Option<&T> {
        self.index.get(digest).and_then(|&i| self.values[i].as_ref())
    }

    fn contains(&self, digest: &Digest) -> bool {
        self.get(digest).is_some()
    }

    fn remove(&mut self, digest: &Digest) -> Option<T> {
        let i = self.index.remove(digest)?;
        self.values[i].take()
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&Digest, &T)> {
        self.index.iter().filter_map(|(d, &i)| Some((d, self.values[i].as_ref()?)))
    }

    fn keys(&self) -> impl Iterator<Item = &Digest> {
        self.index.keys()
    }
}

impl<T> FromIterator<(Digest, T)> for DigestMap<T> {
    fn from_iter<I: IntoIterator<Item = (Digest, T)>>(pairs: I) -> Self {
        let mut map = Self::new();
        for (d, v) in pairs {
            map.insert(d, v);
        }
        map
    }
}

impl FromIterator<Digest> for DigestSet {
    fn from_iter<I: IntoIterator<Item = Digest>>(digests: I) -> Self {
        digests.into_iter().map(|d| (d, ())).collect()
    }
}

/// One repository's manifests, blob links and the digests its tags name, as listed.
struct Listed {
    name: RepositoryName,
    manifests: DigestMap<ObjectMeta>,
    links: DigestMap<ObjectMeta>,
    tagged: HashSet<String>,
}

/// The blob links a sweep may remove: digest -> the link's metadata (see `keys::gc_sweep`).
type Sweep = DigestMap<Metadata>;

/// A sweep record as stored: `{"<digest>": {"<custom metadata>": "<value>", ...}, ...}`.
fn sweep_to_json(sweep: &Sweep) -> Vec<u8> {
    let record = Members(sweep.iter().map(|(digest, custom)| (digest.to_string(), custom)).collect());
    // Strings only: the record always serialises.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// `None` for a record that is not such an object; a name that is not a digest names no link
/// and is skipped.
fn sweep_from_json(bytes: &[u8]) -> Option<Sweep> {
    let record: Members<Metadata> = serde_json::from_slice(bytes).ok()?;
    let links = record.0.into_iter().filter_map(|(digest, custom)| Some((Digest::parse(&digest).ok()?, custom)));
    Some(links.collect())
}

/// Most storage requests a collection has in flight (a Worker keeps at most six connections).
const CONCURRENCY: usize = 6;

fn parse_stored(meta: &ObjectMeta, bytes: &[u8]) -> std::result::Result<Manifest, RegistryError> {
    Manifest::parse(meta.content_type.as_deref(), bytes)
}

/// The manifests a collection with `WHARF_GC_UNTAGGED` keeps: those `tagged` names, those
/// younger than `cutoff`, and what those reach (index children, referrers of a kept subject).
fn live_manifests(tagged: &HashSet<String>, marked: &DigestMap<Marked>, cutoff: u64) -> DigestSet {
    let mut live: DigestSet = marked
        .iter()
        .filter(|(d, m)| m.meta.uploaded_ms >= cutoff || tagged.contains(&d.to_string()))
        .map(|(d, _)| d.clone())
        .collect();
    loop {
        let before = live.len();
        for (d, m) in marked.iter() {
            if live.contains(d) {
                for c in m.refs.children.iter().filter(|c| marked.contains(c)) {
                    live.insert(c.clone(), ());
                }
            } else if m.refs.subject.as_ref().is_some_and(|s| live.contains(s)) {
                live.insert(d.clone(), ());
            }
        }
        if live.len() == before {
            return live;
        }
    }
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Runs one collection at `now_ms` (see the module's protocol); a dry run only reports.
    pub async fn collect_garbage(&self, now_ms: u64, dry_run: bool) -> Result<GcReport> {
        let cutoff = now_ms.saturating_sub(self.config.gc_grace_secs.saturating_mul(1000));
        let mut report = GcReport { dry_run, ..GcReport::default() };
        // Untagged collection reads the tags from R2: not before every tag is there.
        if self.config.gc_untagged && !self.tags_in_r2().await? {
            report.untagged_deferred = !self.copy_kv_tags_to_r2().await?.0;
        }
        let mut unfinished = self.unfinished_sweeps().await?;
        // Objects named by links that stay: what a dry run works from. A real run lists again.
        let mut named = HashSet::new();
        // Objects that manifests reference through no link: kept, whatever the listings say.
        let mut pinned = HashSet::new();
        let mut listing = Listing::new(keys::REPOSITORIES_PREFIX);
        let mut current: Option<Listed> = None;
        // A repository's keys all start with `repositories/<name>/_`, so they come together.
        while let Some(meta) = listing.next(&self.objects).await? {
            let Some((name, kind)) = keys::parse_repository_key(&meta.key) else { continue };
            if let Some(done) = current.take_if(|c| c.name != name) {
                self.collect_repository(done, cutoff, &mut unfinished, &mut report, (&mut named, &mut pinned)).await?;
            }
            let listed = current.get_or_insert_with(|| Listed {
                name,
                manifests: DigestMap::new(),
                links: DigestMap::new(),
                tagged: HashSet::new(),
            });
            match kind {
                RepositoryKey::Manifest(d) => listed.manifests.insert(d, meta),
                RepositoryKey::BlobLink(d) => listed.links.insert(d, meta),
                // The tags in R2, listed with the manifests: strongly consistent, unlike KV's
                // copies, which another location may have written a minute ago unseen here.
                RepositoryKey::Tag(_) => listed.tagged.extend(TagRecord::from_metadata(&meta.custom).map(|r| r.digest)),
                RepositoryKey::Referrer => {}
            }
        }
        if let Some(done) = current {
            self.collect_repository(done, cutoff, &mut unfinished, &mut report, (&mut named, &mut pinned)).await?;
        }

        // Records of stopped sweeps of repositories that are gone altogether.
        if !dry_run {
            for name in unfinished.keys() {
                self.objects.delete(&keys::gc_sweep(name)).await?;
            }
        }

        // 4. Index entries of bytes no link names.
        if !dry_run {
            named = self.linked_objects().await?;
        }
        named.extend(pinned.iter().cloned());
        let mut listing = Listing::new(keys::BLOB_INDEX_PREFIX);
        while let Some(entry) = listing.next(&self.objects).await? {
            let object = entry.custom.get("object");
            if entry.uploaded_ms >= cutoff || object.is_some_and(|o| named.contains(o)) {
                continue;
            }
            if !dry_run {
                if !self.unchanged(&entry).await? {
                    continue;
                }
                self.objects.delete(&entry.key).await?;
            }
            let digest = entry.key.strip_prefix(keys::BLOB_INDEX_PREFIX).unwrap_or(&entry.key).replacen('/', ":", 1);
            report.index_entries.push(digest);
        }

        // 5. Bytes no link names, against a listing made after every source was removed.
        if !dry_run {
            named = self.linked_objects().await?;
            named.extend(pinned);
        }
        let mut listing = Listing::new(keys::BLOBS_PREFIX);
        while let Some(object) = listing.next(&self.objects).await? {
            if object.uploaded_ms >= cutoff || named.contains(&object.key) {
                continue;
            }
            if !dry_run {
                self.objects.delete(&object.key).await?;
            }
            report.bytes_freed += object.size;
            report.blobs.push(RemovedBlob { object: object.key, size: object.size });
        }
        Ok(report)
    }

    /// Steps 1 to 3 for one repository, and what a stopped sweep of it left. Adds the objects its
    /// remaining links name to `named`, and those its manifests reference without a link (a
    /// client deleted it) to `pinned`.
    async fn collect_repository(
        &self,
        listed: Listed,
        cutoff: u64,
        unfinished: &mut HashMap<RepositoryName, Sweep>,
        report: &mut GcReport,
        (named, pinned): (&mut HashSet<String>, &mut HashSet<String>),
    ) -> Result<()> {
        let stopped = unfinished.remove(&listed.name);
        let swept = self.sweep_repository(&listed, cutoff, stopped.as_ref(), report, (named, pinned)).await?;
        // The sweep's re-check is done (or nothing was swept): its record, and that of a stopped
        // run, can go.
        if !report.dry_run && (swept || stopped.is_some()) {
            self.objects.delete(&keys::gc_sweep(&listed.name)).await?;
        }
        Ok(())
    }

    /// [`Registry::collect_repository`] but for the record; `true` when a sweep record was written.
    async fn sweep_repository(
        &self,
        listed: &Listed,
        cutoff: u64,
        stopped: Option<&Sweep>,
        report: &mut GcReport,
        (named, pinned): (&mut HashSet<String>, &mut HashSet<String>),
    ) -> Result<bool> {
        let name = &listed.name;
        let at = |d: &Digest| format!("{name}@{d}");
        let object_of = |meta: &ObjectMeta| BlobLink::from_metadata(&meta.custom).map(|l| l.object);

        // 1. Mark.
        let mut marked = DigestMap::new();
        let entries: Vec<(&Digest, &ObjectMeta)> = listed.manifests.iter().collect();
        for batch in entries.chunks(CONCURRENCY) {
            let reads = join_all(batch.iter().map(|(_, listed)| self.objects.get_bytes(&listed.key))).await;
            for ((d, _), read) in batch.iter().zip(reads) {
                // Gone since the listing: deleted by a client, nothing to mark.
                let Some((meta, bytes)) = read? else { continue };
                let Ok(manifest) = parse_stored(&meta, &bytes) else {
                    // Without its references nothing here can be judged unreferenced.
                    crate::base::log::error(&format!("gc: {name}: cannot read manifest {d}; repository skipped"));
                    report.skipped.push(name.to_string());
                    named.extend(listed.links.iter().filter_map(|(_, meta)| object_of(meta)));
                    return Ok(false);
                };
                marked.insert((*d).clone(), Marked { meta, bytes, refs: Refs::of(&manifest) });
            }
        }
        let live = if self.config.gc_untagged && !report.untagged_deferred {
            live_manifests(&listed.tagged, &marked, cutoff)
        } else {
            marked.keys().cloned().collect()
        };
        let referenced: DigestSet =
            live.keys().filter_map(|d| marked.get(d)).flat_map(|m| m.refs.blobs.iter().cloned()).collect();

        // A link a manifest needs and lacks. If a stopped sweep took it (its re-check never ran),
        // it is put back while the bytes remain. If a client deleted it, it stays deleted, but
        // the bytes are kept while a manifest references them.
        for d in referenced.keys().filter(|d| !listed.links.contains(d)) {
            match stopped.and_then(|s| s.get(d)).and_then(BlobLink::from_metadata) {
                Some(link) => {
                    if self.objects.head(&link.object).await?.is_some() {
                        if !report.dry_run {
                            self.link_blob(name, d, &link).await?;
                        }
                        report.repaired.push(at(d));
                        named.insert(link.object);
                    }
                }
                None => pinned.extend(self.blob_by_digest(d).await?.map(|link| link.object)),
            }
        }

        let doomed_manifests: Vec<Digest> = marked.keys().filter(|d| !live.contains(d)).cloned().collect();
        let (doomed_links, kept_links): (Vec<_>, Vec<_>) =
            listed.links.iter().partition(|(d, meta)| !referenced.contains(d) && meta.uploaded_ms < cutoff);
        named.extend(kept_links.iter().filter_map(|(_, meta)| object_of(meta)));
        if report.dry_run {
            report.manifests.extend(doomed_manifests.iter().map(at));
            report.blob_links.extend(doomed_links.iter().map(|(d, _)| at(d)));
            return Ok(false);
        }
        // Which links this sweep may take, written down first: if it stops before its re-check,
        // the next run knows what it may have to put back.
        let record: Sweep = doomed_links.iter().map(|(d, meta)| ((*d).clone(), meta.custom.clone())).collect();
        if !record.is_empty() {
            let bytes = sweep_to_json(&record);
            self.objects.put(&keys::gc_sweep(name), bytes, PutOptions::default()).await?;
        }

        // 2. Sweep: what points at a manifest before the manifest (see `delete_manifest`).
        let mut removed_manifests = DigestMap::new();
        for d in doomed_manifests {
            let Some(m) = marked.remove(&d) else { continue };
            if !self.unchanged(&m.meta).await? {
                continue;
            }
            if let Some(subject) = &m.refs.subject {
                self.forget_referrer(name, subject, &d).await?;
            }
            self.memo.forget_manifest(name.as_str(), &d.to_string());
            self.objects.delete(&m.meta.key).await?;
            self.memo.forget_manifest(name.as_str(), &d.to_string());
            report.manifests.push(at(&d));
            removed_manifests.insert(d, m);
        }
        let mut removed_links = DigestMap::new();
        for (d, meta) in doomed_links {
            if !self.unchanged(meta).await? {
                continue;
            }
            self.unlink_blob(name, d).await?;
            report.blob_links.push(at(d));
            removed_links.insert(d.clone(), meta);
        }
        if removed_manifests.is_empty() && removed_links.is_empty() {
            return Ok(!record.is_empty());
        }

        // 3. Re-check: manifests written since the mark get back what they need, and a
        // manifest taken as untagged that a tag written since names comes back.
        let mut pending = Vec::new();
        let mut listing = Listing::new(keys::manifests_prefix(name));
        while let Some(meta) = listing.next(&self.objects).await? {
            let Some((_, RepositoryKey::Manifest(d))) = keys::parse_repository_key(&meta.key) else { continue };
            if listed.manifests.get(&d).is_some_and(|old| old.etag == meta.etag && old.uploaded_ms == meta.uploaded_ms)
            {
                continue;
            }
            if let Some((meta, bytes)) = self.objects.get_bytes(&meta.key).await?
                && let Ok(manifest) = parse_stored(&meta, &bytes)
            {
                pending.push(Refs::of(&manifest));
            }
        }
        let mut revive = Vec::new();
        if !removed_manifests.is_empty() {
            let prefix = keys::tag_objects_prefix(name);
            let mut listing = Listing::new(prefix.as_str());
            while let Some(meta) = listing.next(&self.objects).await? {
                let tagged = TagRecord::from_metadata(&meta.custom).and_then(|r| Digest::parse(&r.digest).ok());
                revive.extend(tagged.filter(|d| removed_manifests.contains(d)));
            }
        }
        let any_manifest_removed = !removed_manifests.is_empty();
        loop {
            while let Some(d) = revive.pop() {
                let Some(m) = removed_manifests.remove(&d) else { continue };
                let manifest = parse_stored(&m.meta, &m.bytes)?;
                let size = m.bytes.len() as u64;
                let options = PutOptions { content_type: m.meta.content_type.clone(), ..PutOptions::default() };
                self.objects.put(&m.meta.key, m.bytes, options).await?;
                if let Some(subject) = &m.refs.subject {
                    self.record_referrer(name, subject, &d, &manifest, size).await?;
                }
                report.restored.push(at(&d));
                pending.push(m.refs);
            }
            let Some(refs) = pending.pop() else { break };
            for b in &refs.blobs {
                if let Some(meta) = removed_links.remove(b) {
                    let options = PutOptions { custom: meta.custom.clone(), ..PutOptions::default() };
                    self.objects.put(&meta.key, Vec::new(), options).await?;
                    report.restored.push(at(b));
                }
            }
            revive.extend(refs.children);
        }
        if any_manifest_removed {
            self.drop_catalog_entry_if_empty(name).await?;
        }
        Ok(!record.is_empty())
    }

    /// The records of sweeps a stopped collection left, by repository.
    async fn unfinished_sweeps(&self) -> Result<HashMap<RepositoryName, Sweep>> {
        let mut sweeps = HashMap::new();
        let mut listing = Listing::new(keys::GC_SWEEPS_PREFIX);
        while let Some(meta) = listing.next(&self.objects).await? {
            let Some(name) = keys::repository_of_sweep(&meta.key) else { continue };
            let Some((_, bytes)) = self.objects.get_bytes(&meta.key).await? else { continue };
            let sweep =
                sweep_from_json(&bytes).ok_or_else(|| RegistryError::internal("a malformed gc sweep record"))?;
            sweeps.insert(name, sweep);
        }
        Ok(sweeps)
    }

    /// Whether the object is still the one listed (not rewritten, not deleted).
    async fn unchanged(&self, listed: &ObjectMeta) -> Result<bool> {
        Ok(self
            .objects
            .head(&listed.key)
            .await?
            .is_some_and(|now| now.etag == listed.etag && now.uploaded_ms == listed.uploaded_ms))
    }

    /// Every object some repository's blob link names.
    async fn linked_objects(&self) -> Result<HashSet<String>> {
        let mut named = HashSet::new();
        let mut listing = Listing::new(keys::REPOSITORIES_PREFIX);
        while let Some(meta) = listing.next(&self.objects).await? {
            if let Some((_, RepositoryKey::BlobLink(_))) = keys::parse_repository_key(&meta.key)
                && let Some(link) = BlobLink::from_metadata(&meta.custom)
            {
                named.insert(link.object);
            }
        }
        Ok(named)
    }
}
