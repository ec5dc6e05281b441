//! The repositories phase: each repository listed, marked, swept and re-checked on its own (see
//! the protocol in `gc`), a step taking repositories in key order until its budget is spent.
//!
//! A repository too large for what is left of a step (a listing of 100,000 tags, a mark of
//! thousands of manifests, a sweep of thousands of untagged ones) goes on in the next step: the
//! step saves what it found so far (`keys::GC_REPOSITORY`, a [`Progress`]) and the run's phase
//! names the repository. Each stage resumes where it stopped: the listing after its last key,
//! retention with the tags it has not yet removed, the mark with the manifests it has not read,
//! the sweep with what it has not yet taken. The protocol holds across these boundaries as it
//! does within a step: the sweep removes only what is unchanged since it was listed, and each
//! batch's re-check looks at the repository as it is then.

use super::{
    CONCURRENCY, DigestMap, DigestSet, GcReport, Run, STEP_LIMIT, STEP_TARGET, Sweep, add, sweep_from_json,
    sweep_to_json,
};
use crate::base::error::RegistryError;
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
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Manifests and links one sweep removes at most before its re-check; a step sweeps again
/// while its budget lasts.
const SWEEP_PER_BATCH: usize = 150;

/// Operations one removal costs, its share of the re-check included (a manifest: a last read,
/// its referrer entry, the delete, a listing of the tags that may name it; a link: a last
/// HEAD, the delete, its holder).
const REMOVAL_COST: u64 = 4;

/// A tag as listed, for retention to weigh.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedTag {
    tag: Tag,
    digest: String,
    etag: String,
    uploaded_ms: u64,
}

impl ListedTag {
    /// The tag object as listed, to tell whether it is still the same.
    fn object(&self, name: &RepositoryName) -> ObjectMeta {
        let key = keys::tag_object(name, &self.tag);
        ObjectMeta { key, etag: self.etag.clone(), uploaded_ms: self.uploaded_ms, ..ObjectMeta::default() }
    }
}

/// One repository's manifests, blob links and the digests its tags name, as listed.
#[derive(Serialize, Deserialize)]
struct Listed {
    name: RepositoryName,
    manifests: DigestMap<ObjectMeta>,
    links: DigestMap<ObjectMeta>,
    /// With untagged collection or retention, the manifests its tags name (its tags are not
    /// listed otherwise: a repository of 100,000 tags then costs nothing for them).
    tagged: HashSet<String>,
    /// With retention rules for the repository: each tag, for the rules to weigh.
    tags: Option<Vec<ListedTag>>,
    /// Manifests that retention untagged and no tag left names: collected even with untagged
    /// collection off.
    untagged: DigestSet,
}

impl Listed {
    fn new(name: RepositoryName, weigh_tags: bool) -> Self {
        let tags = weigh_tags.then(Vec::new);
        Self {
            name,
            manifests: DigestMap::new(),
            links: DigestMap::new(),
            tagged: HashSet::new(),
            tags,
            untagged: DigestSet::new(),
        }
    }

    fn add(&mut self, kind: RepositoryKey, meta: ObjectMeta) {
        match kind {
            RepositoryKey::Manifest(d) => self.manifests.insert(d, meta),
            RepositoryKey::BlobLink(d) => self.links.insert(d, meta),
            // The tags in R2, listed with the manifests: strongly consistent, unlike KV's copies,
            // which another location may have written a minute ago unseen here.
            RepositoryKey::Tag(tag) => {
                let Some(record) = TagRecord::from_metadata(&meta.custom) else { return };
                if let Some(tags) = &mut self.tags {
                    let (etag, uploaded_ms) = (meta.etag, meta.uploaded_ms);
                    tags.push(ListedTag { tag, digest: record.digest.clone(), etag, uploaded_ms });
                }
                self.tagged.insert(record.digest);
            }
            RepositoryKey::Referrer | RepositoryKey::Tagged => {}
        }
    }
}

/// What a manifest references.
#[derive(Serialize, Deserialize)]
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
#[derive(Serialize, Deserialize)]
struct Marked {
    meta: ObjectMeta,
    refs: Refs,
}

/// What the mark decided: the manifests that stay, and the blobs those reference.
struct Mark {
    live: DigestSet,
    referenced: DigestSet,
}

/// Where the collection of one repository stands.
#[derive(Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "camelCase")]
enum Stage {
    /// Listing its keys, after this one.
    Listing { after: String },
    /// Untagging what the retention rules do not keep.
    Retention,
    /// Reading its manifests; those in `marked` are read.
    Mark { marked: DigestMap<Marked> },
    /// Removing what the mark found dead, a batch at a time; what is left in `marked` and in
    /// the listed links is yet to be judged.
    Sweep { marked: DigestMap<Marked> },
}

/// A repository whose collection spans steps, as saved from one to the next.
#[derive(Serialize, Deserialize)]
struct Progress {
    run: String,
    listed: Listed,
    stage: Stage,
}

/// Where the next step of the phase starts: after a repository (a key from
/// [`keys::after_repository`]), and within the one that follows it when that one's collection
/// is under way (its [`Progress`] saved).
pub(super) struct Resume {
    pub after: String,
    pub within: Option<RepositoryName>,
}

/// What the sweep took, for the re-check to give back to a push that needs it.
struct Swept {
    manifests: DigestMap<(Marked, Vec<u8>)>,
    links: DigestMap<(ObjectMeta, BlobLink)>,
}

fn parse_stored(meta: &ObjectMeta, bytes: &[u8]) -> std::result::Result<Manifest, RegistryError> {
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

/// Judges the manifests read: the live ones are all of them, or with `WHARF_GC_UNTAGGED` those
/// tags and the grace period keep and what they reach. Manifests retention untagged are
/// collected likewise even without it.
fn judge(listed: &Listed, marked: &DigestMap<Marked>, run: &Run) -> Mark {
    let root = |d: &Digest, m: &Marked| {
        m.meta.uploaded_ms >= run.cutoff
            || listed.tagged.contains(&d.to_string())
            || (!run.untagged && !listed.untagged.contains(d))
    };
    let live = live_manifests(root, marked);
    let referenced = live.keys().filter_map(|d| marked.get(d)).flat_map(|m| m.refs.blobs.iter().cloned()).collect();
    Mark { live, referenced }
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Storage operations so far (R2 and KV), to measure a step's against its budget.
    pub(super) fn spent(&self) -> u64 {
        self.objects.operations() + self.kv.operations()
    }

    /// Whether the collection of `name` reads its tags.
    fn reads_tags(&self, run: &Run, name: &RepositoryName) -> bool {
        run.untagged || self.weighs_tags(run, name)
    }

    /// Whether retention weighs the tags of `name` in this run.
    fn weighs_tags(&self, run: &Run, name: &RepositoryName) -> bool {
        run.retention && self.config.retention.covers(name)
    }

    /// One step of the repositories phase: the repository under way (`within`), then those
    /// after `after`, one at a time, until [`STEP_TARGET`] operations are spent, or
    /// [`STEP_LIMIT`] within one repository. Returns where the next step starts; `None` once
    /// every repository was collected.
    pub(super) async fn collect_repositories(
        &self,
        run: &Run,
        after: Option<String>,
        within: Option<String>,
        report: &mut GcReport,
    ) -> Result<Option<Resume>> {
        let start = self.spent();
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
        // The last key listed, or skipped past: where a listing cut within a repository goes on.
        let mut listed_to: Option<String> = None;
        // Whether the repository under way has its progress saved (to drop once it is done).
        let mut saved = false;
        if let Some(progress) = self.saved_progress(run, within.as_deref()).await? {
            saved = true;
            match progress.stage {
                Stage::Listing { after } => {
                    listing = Listing::after(keys::REPOSITORIES_PREFIX, Some(after.clone()));
                    listed_to = Some(after);
                    current = Some(progress.listed);
                }
                _ => {
                    let name = progress.listed.name.clone();
                    if let Some(progress) = self.advance(progress, run, &stopped, report, start).await? {
                        return self.pause(progress, resume_at).await;
                    }
                    self.objects.delete(keys::GC_REPOSITORY).await?;
                    saved = false;
                    resume_at = keys::after_repository(&name);
                    if self.spent() - start >= STEP_TARGET {
                        return Ok(Some(Resume { after: resume_at, within: None }));
                    }
                    listing = Listing::after(keys::REPOSITORIES_PREFIX, Some(resume_at.clone()));
                }
            }
        }
        // A repository's keys all start with `repositories/<name>/_`, so they come together.
        loop {
            if current.is_some()
                && self.spent() - start >= STEP_LIMIT
                && let (Some(listed), Some(after)) = (current.take(), listed_to.take())
            {
                let progress = Progress { run: run.id.clone(), listed, stage: Stage::Listing { after } };
                return self.pause(progress, resume_at).await;
            }
            let meta = listing.next(&self.objects).await?;
            let parsed = meta.as_ref().and_then(|m| keys::parse_repository_key(&m.key));
            if meta.is_some() && parsed.is_none() {
                continue;
            }
            if let Some(done) = current.take_if(|c| parsed.as_ref().is_none_or(|(name, _)| c.name != *name)) {
                let name = done.name.clone();
                let progress = Progress { run: run.id.clone(), listed: done, stage: Stage::Retention };
                if let Some(progress) = self.advance(progress, run, &stopped, report, start).await? {
                    return self.pause(progress, resume_at).await;
                }
                if std::mem::take(&mut saved) {
                    self.objects.delete(keys::GC_REPOSITORY).await?;
                }
                resume_at = keys::after_repository(&name);
                // The next step lists the key just read again.
                if meta.is_some() && self.spent() - start >= STEP_TARGET {
                    return Ok(Some(Resume { after: resume_at, within: None }));
                }
            }
            let (Some(meta), Some((name, kind))) = (meta, parsed) else { return Ok(None) };
            let wanted = match kind {
                RepositoryKey::Manifest(_) | RepositoryKey::BlobLink(_) => true,
                RepositoryKey::Tag(_) => self.reads_tags(run, &name),
                RepositoryKey::Referrer | RepositoryKey::Tagged => false,
            };
            let key = match wanted {
                true => meta.key.clone(),
                // Keys the collection does not need, however many: passed over a page at once.
                false => keys::after_kind(&name, &kind),
            };
            if !wanted {
                listing.skip_past(&key);
            }
            listed_to = Some(key);
            let weigh_tags = self.weighs_tags(run, &name);
            let listed = current.get_or_insert_with(|| Listed::new(name, weigh_tags));
            if wanted {
                listed.add(kind, meta);
            }
        }
    }

    /// Saves the progress of the repository under way; the next step goes on with it.
    async fn pause(&self, progress: Progress, after: String) -> Result<Option<Resume>> {
        let bytes = serde_json::to_vec(&progress).map_err(RegistryError::internal)?;
        self.objects.put(keys::GC_REPOSITORY, bytes, PutOptions::default()).await?;
        Ok(Some(Resume { after, within: Some(progress.listed.name) }))
    }

    /// The progress saved of repository `within` in this run. `None` without one (the
    /// repository is then collected from its start, which is always safe).
    async fn saved_progress(&self, run: &Run, within: Option<&str>) -> Result<Option<Progress>> {
        let Some(within) = within else { return Ok(None) };
        let Some((_, bytes)) = self.objects.get_bytes(keys::GC_REPOSITORY).await? else { return Ok(None) };
        match serde_json::from_slice::<Progress>(&bytes) {
            Ok(p) if p.run == run.id && p.listed.name.as_str() == within => Ok(Some(p)),
            Ok(_) => Ok(None),
            Err(e) => {
                crate::base::log::error(&format!("gc: {within}: saved progress unreadable ({e}); starting over"));
                Ok(None)
            }
        }
    }

    /// Takes one repository's collection as far as the step's budget allows: retention, then
    /// mark, then sweep and re-check. `None` once it is collected (or left alone, when a
    /// manifest cannot be read), else the progress for the next step.
    async fn advance(
        &self,
        mut progress: Progress,
        run: &Run,
        stopped: &HashSet<RepositoryName>,
        report: &mut GcReport,
        start: u64,
    ) -> Result<Option<Progress>> {
        loop {
            progress.stage = match std::mem::replace(&mut progress.stage, Stage::Retention) {
                // Listings go on in `collect_repositories`.
                listing @ Stage::Listing { .. } => {
                    progress.stage = listing;
                    return Ok(Some(progress));
                }
                Stage::Retention => match self.apply_retention(&mut progress.listed, run, report, start).await? {
                    true => Stage::Mark { marked: DigestMap::new() },
                    false => return Ok(Some(progress)),
                },
                Stage::Mark { mut marked } => match self.mark(&progress.listed, &mut marked, report, start).await? {
                    None => return Ok(None),
                    Some(true) => Stage::Sweep { marked },
                    Some(false) => {
                        progress.stage = Stage::Mark { marked };
                        return Ok(Some(progress));
                    }
                },
                Stage::Sweep { mut marked } => {
                    let stopped = stopped.contains(&progress.listed.name);
                    match self.sweep(&mut progress.listed, &mut marked, stopped, run, report, start).await? {
                        true => return Ok(None),
                        false => {
                            progress.stage = Stage::Sweep { marked };
                            return Ok(Some(progress));
                        }
                    }
                }
            };
        }
    }

    /// Retention (`WHARF_RETENTION`), before the mark: untags what the rules do not keep (a
    /// dry run only reports it), each tag only if still the one listed, while the budget lasts.
    /// The manifests that lose their last tag this way join `listed.untagged`. `true` once
    /// every such tag is handled.
    async fn apply_retention(&self, listed: &mut Listed, run: &Run, report: &mut GcReport, start: u64) -> Result<bool> {
        let name = listed.name.clone();
        let Some(tags) = listed.tags.as_ref().filter(|_| run.retention) else { return Ok(true) };
        let weighed: Vec<Pushed> = tags
            .iter()
            .filter(|t| !self.config.immutable_tags.protects(&name, &t.tag))
            .map(|t| Pushed { tag: t.tag.clone(), at_ms: t.uploaded_ms })
            .collect();
        let by_tag: HashMap<&Tag, &ListedTag> = tags.iter().map(|t| (&t.tag, t)).collect();
        let mut done = true;
        let mut removed = HashSet::new();
        for tag in self.config.retention.expired(&name, &weighed, run.started_ms) {
            let Some(listed_tag) = by_tag.get(&tag) else { continue };
            if !run.dry_run {
                // A last HEAD, then the tag's three copies (KV, R2, its `_tagged` entry).
                if self.spent() - start + REMOVAL_COST > STEP_LIMIT {
                    done = false;
                    break;
                }
                if !self.unchanged(&listed_tag.object(&name)).await? {
                    continue;
                }
                self.delete_tag(&name, &tag, &Digest::parse(&listed_tag.digest)?).await?;
                self.record_event(Action::Delete, Target { tag: Some(tag.to_string()), ..Target::new(&name) });
            }
            add(&mut report.untagged, format!("{name}:{tag}"), &mut report.more);
            removed.insert(tag);
        }
        // What the tags left name; the manifests that only removed tags named are freed.
        let (gone, kept): (Vec<ListedTag>, Vec<ListedTag>) =
            listed.tags.take().unwrap_or_default().into_iter().partition(|t| removed.contains(&t.tag));
        listed.tagged = kept.iter().map(|t| t.digest.clone()).collect();
        for t in gone.iter().filter(|t| !listed.tagged.contains(&t.digest)) {
            if let Ok(d) = Digest::parse(&t.digest) {
                listed.untagged.insert(d, ());
            }
        }
        listed.tags = Some(kept);
        Ok(done)
    }

    /// Step 1, mark: reads the listed manifests `marked` lacks, while the budget lasts.
    /// `Some(true)` once every one is read, `Some(false)` when the budget ran out first. `None`
    /// when one cannot be read: without its references nothing can be judged unreferenced, and
    /// the repository is left alone.
    async fn mark(
        &self,
        listed: &Listed,
        marked: &mut DigestMap<Marked>,
        report: &mut GcReport,
        start: u64,
    ) -> Result<Option<bool>> {
        let unread: Vec<(&Digest, &ObjectMeta)> =
            listed.manifests.iter().filter(|(d, _)| !marked.contains(d)).collect();
        for batch in unread.chunks(CONCURRENCY) {
            if self.spent() - start + batch.len() as u64 > STEP_LIMIT {
                return Ok(Some(false));
            }
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
                marked.insert((*d).clone(), Marked { meta, refs: Refs::of(&manifest) });
            }
        }
        Ok(Some(true))
    }

    /// Steps 2 and 3, sweep and re-check, a batch at a time while the budget lasts: the doomed
    /// manifests (read, not live) and links (referenced by no live manifest, older than the
    /// grace period). Each one judged leaves `marked` or `listed.links`, swept or not, so a
    /// step goes on with the rest. `stopped`: a stopped run left a sweep record for the
    /// repository. `true` once nothing is left to sweep.
    async fn sweep(
        &self,
        listed: &mut Listed,
        marked: &mut DigestMap<Marked>,
        stopped: bool,
        run: &Run,
        report: &mut GcReport,
        start: u64,
    ) -> Result<bool> {
        let name = listed.name.clone();
        let mark = judge(listed, marked, run);
        let mut left_over = match stopped {
            true => self.sweep_record(&name).await?,
            false => None,
        };
        self.repair(listed, &mark, left_over.as_ref(), run, report).await?;
        let mut doomed_manifests: Vec<Digest> = marked.keys().filter(|d| !mark.live.contains(d)).cloned().collect();
        let mut doomed_links: Vec<Digest> = listed
            .links
            .iter()
            .filter(|(d, meta)| !mark.referenced.contains(d) && meta.uploaded_ms < run.cutoff)
            .map(|(d, _)| d.clone())
            .collect();
        loop {
            if doomed_manifests.is_empty() && doomed_links.is_empty() {
                if left_over.is_some() && !run.dry_run {
                    self.objects.delete(&keys::gc_sweep(&name)).await?;
                }
                return Ok(true);
            }
            // Room for a batch, and for its re-check's listing of the manifests.
            let reserve = listed.manifests.len() as u64 / 1000 + 3;
            let room = STEP_LIMIT.saturating_sub(self.spent() - start + reserve) / REMOVAL_COST;
            let take = (room as usize).min(SWEEP_PER_BATCH);
            if take == 0 {
                return Ok(false);
            }
            let manifests: Vec<Digest> = doomed_manifests.drain(..take.min(doomed_manifests.len())).collect();
            let links: Vec<(Digest, ObjectMeta, BlobLink)> = doomed_links
                .drain(..(take - manifests.len()).min(doomed_links.len()))
                .filter_map(|d| {
                    let meta = listed.links.remove(&d)?;
                    let link = BlobLink::from_metadata(&meta.custom)?;
                    Some((d, meta, link))
                })
                .collect();
            if run.dry_run {
                for d in &manifests {
                    marked.remove(d);
                    add(&mut report.manifests, format!("{name}@{d}"), &mut report.more);
                }
                for (d, _, link) in &links {
                    // The holder says what the sweep would do, for this run's bytes phase to report.
                    self.hold(&name, d, link, Hold::DoomedIn(&run.id)).await?;
                    add(&mut report.blob_links, format!("{name}@{d}"), &mut report.more);
                }
                continue;
            }
            // Which links this batch may take, written down first: if it stops before its
            // re-check, the next run knows what it may have to put back.
            let record: Sweep = links.iter().map(|(d, meta, _)| (d.clone(), meta.custom.clone())).collect();
            if !record.is_empty() {
                self.objects.put(&keys::gc_sweep(&name), sweep_to_json(&record), PutOptions::default()).await?;
            }
            let swept = self.sweep_batch(listed, marked, manifests, links, report).await?;
            self.recheck(listed, swept, report).await?;
            // The re-check is done (or nothing was swept): the record, and that of a stopped
            // run, can go.
            let had_left_over = left_over.take().is_some();
            if !record.is_empty() || had_left_over {
                self.objects.delete(&keys::gc_sweep(&name)).await?;
            }
        }
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

    /// Step 2, sweep: removes one batch of doomed manifests and links, each only after a last
    /// read shows it unchanged since it was listed (a push rewrote it: it stays). What points
    /// at a manifest goes before the manifest (see `delete_manifest`).
    async fn sweep_batch(
        &self,
        listed: &mut Listed,
        marked: &mut DigestMap<Marked>,
        doomed_manifests: Vec<Digest>,
        doomed_links: Vec<(Digest, ObjectMeta, BlobLink)>,
        report: &mut GcReport,
    ) -> Result<Swept> {
        let name = listed.name.clone();
        let mut swept = Swept { manifests: DigestMap::new(), links: DigestMap::new() };
        for d in doomed_manifests {
            let Some(m) = marked.remove(&d) else { continue };
            listed.manifests.remove(&d);
            // The bytes, kept for the re-check to put back if a push needs them.
            let Some((now, bytes)) = self.objects.get_bytes(&m.meta.key).await? else { continue };
            if now.etag != m.meta.etag || now.uploaded_ms != m.meta.uploaded_ms {
                continue;
            }
            if let Some(subject) = &m.refs.subject {
                self.forget_referrer(&name, subject, &d).await?;
            }
            self.memo.forget_manifest(name.as_str(), &d.to_string());
            self.objects.delete(&m.meta.key).await?;
            self.memo.forget_manifest(name.as_str(), &d.to_string());
            add(&mut report.manifests, format!("{name}@{d}"), &mut report.more);
            swept.manifests.insert(d, (m, bytes));
        }
        for (d, meta, link) in doomed_links {
            if !self.unchanged(&meta).await? {
                continue;
            }
            self.unlink_blob(&name, &d, &link).await?;
            add(&mut report.blob_links, format!("{name}@{d}"), &mut report.more);
            swept.links.insert(d, (meta, link));
        }
        Ok(swept)
    }

    /// Step 3, re-check: a manifest written since the listing (a push that checked its blobs
    /// before the sweep) gets back every link and child manifest the sweep took from under it,
    /// and a manifest taken as untagged that a tag written since names comes back (found in the
    /// index of tags by manifest, which a push writes before its tag).
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
        for d in swept.manifests.keys() {
            if !self.indexed_tags_of(name, d).await?.is_empty() {
                revive.push(d.clone());
            }
        }
        let any_manifest_removed = !swept.manifests.is_empty();
        loop {
            while let Some(d) = revive.pop() {
                let Some((m, bytes)) = swept.manifests.remove(&d) else { continue };
                let manifest = parse_stored(&m.meta, &bytes)?;
                let size = bytes.len() as u64;
                let options = PutOptions { content_type: m.meta.content_type.clone(), ..PutOptions::default() };
                self.objects.put(&m.meta.key, bytes, options).await?;
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
        let sweep = sweep_from_json(&bytes).ok_or_else(|| RegistryError::internal("a malformed gc sweep record"))?;
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
