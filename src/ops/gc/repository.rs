//! The repositories phase: each repository marked, swept and re-checked on its own, a step
//! taking repositories in key order until its budget is spent (see the protocol in `gc`).

use super::{
    CONCURRENCY, DigestMap, DigestSet, GcReport, Run, STEP_TARGET, Sweep, add, sweep_from_json, sweep_to_json,
};
use crate::base::names::{Digest, RepositoryName, Tag};
use crate::config::notify::Action;
use crate::config::retention::Pushed;
use crate::oci::blobs::{BlobLink, Hold};
use crate::oci::manifests::format::Manifest;
use crate::registry::events::Target;
use crate::registry::{Registry, Result};
use crate::storage::keys::{self, Holder, RepositoryKey, TagRecord};
use crate::storage::{KeyValueStore, Listing, Metadata, ObjectMeta, ObjectStore, PutOptions};
use futures_util::future::join_all;
use std::collections::HashSet;

/// Manifests and links a step removes from one repository at most (each costs about three
/// operations); a repository with more is swept again by the next step.
const SWEEP_PER_STEP: usize = 150;

/// One repository's manifests, blob links and the digests its tags name, as listed.
struct Listed {
    name: RepositoryName,
    manifests: DigestMap<ObjectMeta>,
    links: DigestMap<ObjectMeta>,
    tagged: HashSet<String>,
    /// With retention rules for the repository: each tag with its record and listing, for the
    /// rules to weigh (`None` otherwise: a repository of 100,000 tags keeps only their digests).
    tags: Option<Vec<(Tag, TagRecord, ObjectMeta)>>,
}

impl Listed {
    fn new(name: RepositoryName, weigh_tags: bool) -> Self {
        let tags = weigh_tags.then(Vec::new);
        Self { name, manifests: DigestMap::new(), links: DigestMap::new(), tagged: HashSet::new(), tags }
    }

    fn add(&mut self, kind: RepositoryKey, meta: ObjectMeta) {
        match kind {
            RepositoryKey::Manifest(d) => self.manifests.insert(d, meta),
            RepositoryKey::BlobLink(d) => self.links.insert(d, meta),
            // The tags in R2, listed with the manifests: strongly consistent, unlike KV's copies,
            // which another location may have written a minute ago unseen here.
            RepositoryKey::Tag(tag) => {
                let Some(record) = TagRecord::from_metadata(&meta.custom) else { return };
                self.tagged.insert(record.digest.clone());
                if let Some(tags) = &mut self.tags {
                    tags.push((tag, record, meta));
                }
            }
            RepositoryKey::Referrer | RepositoryKey::Tagged => {}
        }
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

/// What the mark decided: every manifest read, those that stay, and the blobs those reference.
struct Mark {
    marked: DigestMap<Marked>,
    live: DigestSet,
    referenced: DigestSet,
}

/// What the sweep took, for the re-check to give back to a push that needs it.
struct Swept {
    manifests: DigestMap<Marked>,
    links: DigestMap<(ObjectMeta, BlobLink)>,
}

fn parse_stored(meta: &ObjectMeta, bytes: &[u8]) -> std::result::Result<Manifest, crate::base::error::RegistryError> {
    Manifest::parse(meta.content_type.as_deref(), bytes)
}

/// The manifests a collection keeps: the `root`s (tagged, younger than the grace period, or
/// with untagged collection off, any not untagged by retention), and what those reach (index
/// children, referrers of a kept subject).
fn live_manifests(root: impl Fn(&Digest, &Marked) -> bool, marked: &DigestMap<Marked>) -> DigestSet {
    let mut live: DigestSet = marked.iter().filter(|(d, m)| root(d, m)).map(|(d, _)| d.clone()).collect();
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
    /// One step of the repositories phase: the repositories after `after` (a key from
    /// [`keys::after_repository`]), one at a time, until [`STEP_TARGET`] operations are spent.
    /// Returns where the next step starts; `None` once every repository was collected.
    pub(super) async fn collect_repositories(
        &self,
        run: &Run,
        after: Option<String>,
        report: &mut GcReport,
    ) -> Result<Option<String>> {
        let start = self.objects.operations();
        // Records of sweeps a stopped run left (rare: one listing finds them all).
        let stopped: HashSet<RepositoryName> = self
            .objects
            .list(keys::GC_SWEEPS_PREFIX, crate::storage::ListFrom::Beginning, 1000)
            .await?
            .objects
            .iter()
            .filter_map(|o| keys::repository_of_sweep(&o.key))
            .collect();
        // Where a step that ends here lets the next one start: after the last repository done.
        let mut resume_at = after.clone().unwrap_or_else(|| keys::REPOSITORIES_PREFIX.to_owned());
        let mut listing = Listing::after(keys::REPOSITORIES_PREFIX, after);
        let mut current: Option<Listed> = None;
        // A repository's keys all start with `repositories/<name>/_`, so they come together.
        loop {
            let meta = listing.next(&self.objects).await?;
            let parsed = meta.as_ref().and_then(|m| keys::parse_repository_key(&m.key));
            if meta.is_some() && parsed.is_none() {
                continue;
            }
            if let Some(done) = current.take_if(|c| parsed.as_ref().is_none_or(|(name, _)| c.name != *name)) {
                let done_name = done.name.clone();
                if !self.collect_repository(done, run, stopped.contains(&done_name), report).await? {
                    // More to sweep than a step takes: the next step takes this repository again.
                    return Ok(Some(resume_at));
                }
                resume_at = keys::after_repository(&done_name);
                // The next step lists the key just read again.
                if meta.is_some() && self.objects.operations() - start >= STEP_TARGET {
                    return Ok(Some(resume_at));
                }
            }
            let (Some(meta), Some((name, kind))) = (meta, parsed) else { return Ok(None) };
            let weigh_tags = !self.config.retention.is_empty() && self.config.retention.covers(&name);
            current.get_or_insert_with(|| Listed::new(name, weigh_tags)).add(kind, meta);
        }
    }

    /// Mark, sweep and re-check one repository; `stopped`: a stopped run left a sweep record
    /// for it. `false` when it had more to sweep than [`SWEEP_PER_STEP`]: the rest is for the
    /// next step, which takes the repository again.
    async fn collect_repository(
        &self,
        mut listed: Listed,
        run: &Run,
        stopped: bool,
        report: &mut GcReport,
    ) -> Result<bool> {
        let (untagged, retention_done) = self.apply_retention(&mut listed, run, report).await?;
        let name = &listed.name;
        let Some(mark) = self.mark(&listed, &untagged, run, report).await? else { return Ok(true) };
        let stopped = match stopped {
            true => self.sweep_record(name).await?,
            false => None,
        };
        self.repair(&listed, &mark, stopped.as_ref(), run, report).await?;

        let at = |d: &Digest| format!("{name}@{d}");
        let mut doomed_manifests: Vec<Digest> =
            mark.marked.keys().filter(|d| !mark.live.contains(d)).cloned().collect();
        let mut doomed_links: Vec<(Digest, ObjectMeta, BlobLink)> = listed
            .links
            .iter()
            .filter(|(d, meta)| !mark.referenced.contains(d) && meta.uploaded_ms < run.cutoff)
            .filter_map(|(d, meta)| Some((d.clone(), meta.clone(), BlobLink::from_metadata(&meta.custom)?)))
            .collect();
        let finished = retention_done && doomed_manifests.len() + doomed_links.len() <= SWEEP_PER_STEP;
        doomed_manifests.truncate(SWEEP_PER_STEP);
        doomed_links.truncate(SWEEP_PER_STEP - doomed_manifests.len());
        if run.dry_run {
            doomed_manifests.iter().for_each(|d| add(&mut report.manifests, at(d), &mut report.more));
            for (d, _, link) in &doomed_links {
                // The holder says what the sweep would do, for this run's bytes phase to report.
                self.hold(name, d, link, Hold::DoomedIn(&run.id)).await?;
                add(&mut report.blob_links, at(d), &mut report.more);
            }
            // A dry run removes nothing: taking the repository again would find the same.
            return Ok(true);
        }
        // Which links this sweep may take, written down first: if it stops before its re-check,
        // the next run knows what it may have to put back.
        let record: Sweep = doomed_links.iter().map(|(d, meta, _)| (d.clone(), meta.custom.clone())).collect();
        if !record.is_empty() {
            self.objects.put(&keys::gc_sweep(name), sweep_to_json(&record), PutOptions::default()).await?;
        }
        let swept = self.sweep(name, mark, doomed_manifests, doomed_links, report).await?;
        self.recheck(&listed, swept, report).await?;
        // The re-check is done (or nothing was swept): the record, and that of a stopped run,
        // can go.
        if !record.is_empty() || stopped.is_some() {
            self.objects.delete(&keys::gc_sweep(name)).await?;
        }
        Ok(finished)
    }

    /// Retention (`WHARF_RETENTION`), before the mark: untags what the rules do not keep (a
    /// dry run only reports it), each tag only if still the one listed. Returns the manifests
    /// that lost their last tag this way, and whether every untagging fitted in this step.
    async fn apply_retention(
        &self,
        listed: &mut Listed,
        run: &Run,
        report: &mut GcReport,
    ) -> Result<(DigestSet, bool)> {
        let name = listed.name.clone();
        let Some(tags) = listed.tags.as_ref().filter(|_| run.retention) else { return Ok((DigestSet::new(), true)) };
        let weighed: Vec<Pushed> = tags
            .iter()
            .filter(|(tag, _, _)| !self.config.immutable_tags.protects(&name, tag))
            .map(|(tag, _, meta)| Pushed { tag: tag.clone(), at_ms: meta.uploaded_ms })
            .collect();
        let mut expired = self.config.retention.expired(&name, &weighed, run.started_ms);
        let done = expired.len() <= SWEEP_PER_STEP;
        expired.truncate(SWEEP_PER_STEP);
        let mut removed = HashSet::new();
        for tag in &expired {
            let Some((_, record, meta)) = tags.iter().find(|(t, _, _)| t == tag) else { continue };
            if !run.dry_run {
                if !self.unchanged(meta).await? {
                    continue;
                }
                self.delete_tag(&name, tag, &record.digest()?).await?;
                self.record_event(Action::Delete, Target { tag: Some(tag.to_string()), ..Target::new(&name) });
            }
            add(&mut report.untagged, format!("{name}:{tag}"), &mut report.more);
            removed.insert(tag.clone());
        }
        // What the tags left name; the manifests that only removed tags named are freed.
        let (gone, left): (Vec<_>, Vec<_>) =
            tags.iter().map(|(t, r, _)| (t.clone(), r.digest.clone())).partition(|(t, _)| removed.contains(t));
        listed.tagged = left.into_iter().map(|(_, d)| d).collect();
        let freed = gone.iter().filter(|(_, d)| !listed.tagged.contains(d)).filter_map(|(_, d)| Digest::parse(d).ok());
        Ok((freed.collect(), done))
    }

    /// Step 1, mark: reads every manifest listed; the live ones are all of them, or with
    /// `WHARF_GC_UNTAGGED` those tags and the grace period keep and what they reach. Manifests
    /// retention `untagged` are collected likewise even without it. `None` when a manifest
    /// cannot be read: without its references nothing can be judged unreferenced, and the
    /// repository is left alone.
    async fn mark(
        &self,
        listed: &Listed,
        untagged: &DigestSet,
        run: &Run,
        report: &mut GcReport,
    ) -> Result<Option<Mark>> {
        let mut marked = DigestMap::new();
        let entries: Vec<(&Digest, &ObjectMeta)> = listed.manifests.iter().collect();
        for batch in entries.chunks(CONCURRENCY) {
            let reads = join_all(batch.iter().map(|(_, listed)| self.objects.get_bytes(&listed.key))).await;
            for ((d, _), read) in batch.iter().zip(reads) {
                // Gone since the listing: deleted by a client, nothing to mark.
                let Some((meta, bytes)) = read? else { continue };
                let Ok(manifest) = parse_stored(&meta, &bytes) else {
                    let name = &listed.name;
                    crate::base::log::error(&format!("gc: {name}: cannot read manifest {d}; repository skipped"));
                    add(&mut report.skipped, name.to_string(), &mut report.more);
                    return Ok(None);
                };
                marked.insert((*d).clone(), Marked { meta, bytes, refs: Refs::of(&manifest) });
            }
        }
        // The roots: what tags (or the grace period) keep; with untagged collection off, every
        // manifest but those retention just untagged.
        let root = |d: &Digest, m: &Marked| {
            m.meta.uploaded_ms >= run.cutoff
                || listed.tagged.contains(&d.to_string())
                || (!run.untagged && !untagged.contains(d))
        };
        let live = live_manifests(root, &marked);
        let referenced = live.keys().filter_map(|d| marked.get(d)).flat_map(|m| m.refs.blobs.iter().cloned()).collect();
        Ok(Some(Mark { marked, live, referenced }))
    }

    /// A blob a live manifest references and the repository lacks a link for. If a stopped
    /// sweep took it (its re-check never ran), it is put back while the bytes remain. If a
    /// client deleted it, it stays deleted, but the bytes are pinned for this run: kept while a
    /// manifest references them. The other links a stopped sweep took get their holders
    /// `unlinked`, which it may not have reached.
    async fn repair(
        &self,
        listed: &Listed,
        mark: &Mark,
        stopped: Option<&Sweep>,
        run: &Run,
        report: &mut GcReport,
    ) -> Result<()> {
        let name = &listed.name;
        for d in mark.referenced.keys().filter(|d| !listed.links.contains(d)) {
            match stopped.and_then(|s| s.get(d)).and_then(BlobLink::from_metadata) {
                Some(link) => {
                    if self.objects.head(&link.object).await?.is_some() {
                        if !run.dry_run {
                            self.link_blob(name, d, &link).await?;
                        }
                        add(&mut report.repaired, format!("{name}@{d}"), &mut report.more);
                    }
                }
                None => {
                    let Some(upload) = self.blob_by_digest(d).await?.and_then(|l| keys::upload_of_object(&l.object))
                    else {
                        continue;
                    };
                    let custom: Metadata = [("digest", d.to_string()), ("run", run.id.clone())].into_iter().collect();
                    let options = PutOptions { custom, ..PutOptions::default() };
                    self.objects.put(&keys::holder(&upload, &Holder::Pin), Vec::new(), options).await?;
                }
            }
        }
        // The stopped sweep may have removed a link and not yet said so in its holder.
        let taken = stopped
            .into_iter()
            .flat_map(|s| s.iter())
            .filter(|(d, _)| !listed.links.contains(d) && !mark.referenced.contains(d));
        for (d, custom) in taken {
            if let (false, Some(link)) = (run.dry_run, BlobLink::from_metadata(custom)) {
                self.hold(name, d, &link, Hold::Unlinked).await?;
            }
        }
        Ok(())
    }

    /// Step 2, sweep: removes the doomed manifests and links, each only after a last HEAD shows
    /// it unchanged since the listing (a push rewrote it: it stays). What points at a manifest
    /// goes before the manifest (see `delete_manifest`).
    async fn sweep(
        &self,
        name: &RepositoryName,
        mut mark: Mark,
        doomed_manifests: Vec<Digest>,
        doomed_links: Vec<(Digest, ObjectMeta, BlobLink)>,
        report: &mut GcReport,
    ) -> Result<Swept> {
        let mut swept = Swept { manifests: DigestMap::new(), links: DigestMap::new() };
        for d in doomed_manifests {
            let Some(m) = mark.marked.remove(&d) else { continue };
            if !self.unchanged(&m.meta).await? {
                continue;
            }
            if let Some(subject) = &m.refs.subject {
                self.forget_referrer(name, subject, &d).await?;
            }
            self.memo.forget_manifest(name.as_str(), &d.to_string());
            self.objects.delete(&m.meta.key).await?;
            self.memo.forget_manifest(name.as_str(), &d.to_string());
            add(&mut report.manifests, format!("{name}@{d}"), &mut report.more);
            swept.manifests.insert(d, m);
        }
        for (d, meta, link) in doomed_links {
            if !self.unchanged(&meta).await? {
                continue;
            }
            self.unlink_blob(name, &d, &link).await?;
            add(&mut report.blob_links, format!("{name}@{d}"), &mut report.more);
            swept.links.insert(d, (meta, link));
        }
        Ok(swept)
    }

    /// Step 3, re-check: a manifest written since the mark (a push that checked its blobs before the
    /// sweep) gets back every link and child manifest the sweep took from under it, and a
    /// manifest taken as untagged that a tag written since names comes back.
    async fn recheck(&self, listed: &Listed, mut swept: Swept, report: &mut GcReport) -> Result<()> {
        if swept.manifests.is_empty() && swept.links.is_empty() {
            return Ok(());
        }
        let name = &listed.name;
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
        let any_manifest_removed = !swept.manifests.is_empty();
        if any_manifest_removed {
            let mut listing = Listing::new(keys::tag_objects_prefix(name));
            while let Some(meta) = listing.next(&self.objects).await? {
                let tagged = TagRecord::from_metadata(&meta.custom).and_then(|r| Digest::parse(&r.digest).ok());
                revive.extend(tagged.filter(|d| swept.manifests.contains(d)));
            }
        }
        loop {
            while let Some(d) = revive.pop() {
                let Some(m) = swept.manifests.remove(&d) else { continue };
                let manifest = parse_stored(&m.meta, &m.bytes)?;
                let size = m.bytes.len() as u64;
                let options = PutOptions { content_type: m.meta.content_type.clone(), ..PutOptions::default() };
                self.objects.put(&m.meta.key, m.bytes, options).await?;
                if let Some(subject) = &m.refs.subject {
                    self.record_referrer(name, subject, &d, &manifest, size).await?;
                }
                add(&mut report.restored, format!("{name}@{d}"), &mut report.more);
                pending.push(m.refs);
            }
            let Some(refs) = pending.pop() else { break };
            for b in &refs.blobs {
                if let Some((_, link)) = swept.links.remove(b) {
                    self.link_blob(name, b, &link).await?;
                    add(&mut report.restored, format!("{name}@{b}"), &mut report.more);
                }
            }
            revive.extend(refs.children);
        }
        if any_manifest_removed {
            self.drop_catalog_entry_if_empty(name).await?;
        }
        Ok(())
    }

    /// The sweep record a stopped run left for the repository.
    async fn sweep_record(&self, name: &RepositoryName) -> Result<Option<Sweep>> {
        let Some((_, bytes)) = self.objects.get_bytes(&keys::gc_sweep(name)).await? else { return Ok(None) };
        let sweep = sweep_from_json(&bytes)
            .ok_or_else(|| crate::base::error::RegistryError::internal("a malformed gc sweep record"))?;
        Ok(Some(sweep))
    }

    /// Whether the object is still the one listed (not rewritten, not deleted).
    pub(super) async fn unchanged(&self, listed: &ObjectMeta) -> Result<bool> {
        Ok(self
            .objects
            .head(&listed.key)
            .await?
            .is_some_and(|now| now.etag == listed.etag && now.uploaded_ms == listed.uploaded_ms))
    }
}
