//! Garbage collection: removes the blobs no manifest references and, with `WHARF_GC_UNTAGGED`,
//! the manifests no tag reaches. The cron trigger starts a run (`WHARF_GC`), and so does
//! `POST /_wharf/gc` with the admin token, as a dry run unless asked otherwise.
//!
//! # Runs and steps
//! A run is a sequence of steps, each one invocation within a budget of [`STEP_BUDGET`] storage
//! operations (a Worker invocation has 1,000 KV operations, and 50 subrequests on the Free plan
//! or 10,000 on Paid), and with memory bounded by what one step decides on, not by the registry.
//! The run's state (`keys::GC_RUN`: phase, cursor, report) is one R2 object: a step reads it,
//! takes a lease on it with a conditional put, does its work, and writes the next state
//! conditionally again. So a run resumes where its last step stopped, and two steps, or two runs,
//! never go on at once: a run starts only when the last one is done. On Workers the steps are
//! messages of the `GC` queue (see `docs/garbage-collection.md` for why a Queue): each step sends
//! the next. Without the queue, the steps run one after another in the invocation that started
//! the run.
//!
//! The phases, in order:
//! - **start**: with `WHARF_GC_UNTAGGED` or `WHARF_RETENTION`, untagged collection and
//!   retention wait until every tag kept in KV alone is in R2 (see `migrate`); one batch of them
//!   is copied.
//! - **holders**, once per registry: the holders of blob links and index entries, and the
//!   `_tagged` entries of tags, written before these existed (see `migrate`).
//! - **repositories**: each repository on its own (see `repository`): retention first
//!   (`WHARF_RETENTION`: the tags its rules do not keep are removed), then three steps:
//!   1. **Mark.** Read every manifest. The live ones are all of them, or with
//!      `WHARF_GC_UNTAGGED` the tagged ones, the ones younger than the grace period, and what
//!      they reach (index children; referrers whose subject is live). Their configs and layers
//!      are referenced.
//!   2. **Sweep.** Remove the manifests that are not live and the blob links nothing
//!      references, only when older than the grace period (`WHARF_GC_GRACE_SECONDS`), and each
//!      only after a last HEAD shows it unchanged since the listing (a push rewrote it: it
//!      stays). A removed link leaves its holder `unlinked`.
//!   3. **Re-check.** List the repository's manifests again. One that is new or rewritten since
//!      the mark (a push that checked its blobs before the sweep) gets back every link and child
//!      manifest the sweep took from under it.
//! - **sweeps**: records of stopped sweeps of repositories that are gone.
//! - **bytes**: byte objects no repository holds any more, and the index entries naming them
//!   (see `bytes`).
//!
//! # Protocol
//! Distribution's collector needs the registry read-only while it runs. wharf keeps taking
//! pushes, and R2 has neither locks nor conditional deletes, so safety comes from the order of
//! operations on both sides, and it holds whether a push lands within a step or between two.
//!
//! The writers, when `WHARF_GC=on`, check again after writing:
//! - A manifest PUT checks its blobs and children again after writing the manifest and before
//!   any tag. If one is gone it undoes its write and answers MANIFEST_BLOB_UNKNOWN. Either that
//!   check follows the sweep's delete and sees it, or the manifest was written before the
//!   re-check, which restores what it needs. If its own manifest is gone (taken as untagged),
//!   it writes it again.
//! - A link is written after its holder, and removed before its holder says `unlinked`: no
//!   link names bytes without a holder saying so. The bytes phase removes an index entry before
//!   it lists the object's holders again, and removes the object only if none links it.
//! - A mount checks its source (the link or index entry it copied) again after linking. If the
//!   source is gone or changed, it removes its link and starts an upload session instead.
//!   Otherwise the source went after the mount's holder was written, and the bytes phase's
//!   second listing of holders sees it.
//! - Uploads write bytes under a key of their own (`keys::blob_by_upload`), never rewritten, so
//!   bytes the collection removes (listed, older than the grace period) are never new ones.
//!
//! A blob uploaded but not yet referenced (a push between its layers and its manifest) is
//! younger than the grace period, so it stays. A step stopped half-way is safe: each removes
//! only what nothing referenced when it looked, and the step runs again. A sweep writes down the
//! links it may take before taking any (`keys::gc_sweep`) and drops the record after its
//! re-check, so a step that finds a record knows that re-check never ran. It then puts back,
//! while the bytes remain, each recorded link that a manifest needs. Only recorded links come
//! back: a blob a client deleted stays deleted, but a manifest that references it pins its bytes
//! for the run.
//!
//! What remains open: the last HEAD and the delete of a sweep are two requests. A push that
//! rewrites the same link, or the same untagged manifest, exactly between them loses the
//! rewrite. For a link, the manifest PUT that follows is then refused (MANIFEST_BLOB_UNKNOWN) and
//! the client uploads again. For an untagged manifest, the window is one R2 round trip, and the
//! PUT's own re-check must also fall inside it.
//! Also, sweep records hold links only. With `WHARF_GC_UNTAGGED`, suppose a step is stopped
//! between removing an untagged manifest and its re-check. An index pushed in that window, naming
//! the manifest as a child, then keeps a missing child.

mod bytes;
mod repository;

use crate::base::de::Members;
use crate::base::error::RegistryError;
use crate::base::names::{Digest, UploadId};
use crate::ops::notify::RequestRecord;
use crate::registry::{Registry, Result};
use crate::storage::keys;
use crate::storage::{KeyValueStore, Metadata, ObjectMeta, ObjectStore, PutOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Storage operations a step may use (R2 and KV together).
pub const STEP_BUDGET: u64 = 1000;
/// A step takes no new repository once it has used this many, and goes on within one
/// repository (listing, untagging, reading manifests, sweeping) until [`STEP_LIMIT`]: the rest
/// of that repository is for the next step (see `repository`).
const STEP_TARGET: u64 = 400;
/// What a step uses at most before it saves where it stands, leaving room for that and the
/// run's state within [`STEP_BUDGET`] (one piece of work costs at most [`CONCURRENCY`]).
const STEP_LIMIT: u64 = 950;
/// How long a step may hold the run: past it, another may take over (a queue consumer's
/// invocation ends within 15 minutes).
pub const LEASE_MS: u64 = 15 * 60 * 1000;
/// A run with no step for this long has lost its queue message: the cron sends another.
const STALLED_MS: u64 = 10 * 60 * 1000;
/// Most items a report lists of each kind; the rest are counted in `more`.
const REPORT_ITEMS: usize = 1000;

/// What a collection removed, or in a dry run would remove: what the admin endpoint answers
/// and the last step logs.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
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
    /// Tags retention (`WHARF_RETENTION`) removed, as `repository:tag`.
    pub untagged: Vec<String>,
    /// Repositories left alone because one of their manifests could not be read.
    pub skipped: Vec<String>,
    /// With `WHARF_GC_UNTAGGED` or retention rules: no manifest was collected as untagged and no
    /// tag removed, because tags kept in KV alone are still being copied to R2 (see `migrate`).
    pub untagged_deferred: bool,
    /// Items left out of the lists above, past [`REPORT_ITEMS`] of a kind.
    pub more: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemovedBlob {
    pub object: String,
    pub size: u64,
}

/// Adds `item` to a list of the report, or counts it once the list is full.
fn add<T>(list: &mut Vec<T>, item: T, more: &mut u64) {
    match list.len() < REPORT_ITEMS {
        true => list.push(item),
        false => *more += 1,
    }
}

impl GcReport {
    /// The report as a JSON value (for the log; the admin endpoint serialises the report itself,
    /// in field order).
    pub fn to_json(&self) -> serde_json::Value {
        // Strings, integers and lists of them always convert.
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "camelCase")]
pub enum Phase {
    Start,
    /// Holders of links and index entries older than holders, after this key.
    Holders {
        after: Option<String>,
    },
    /// Repositories after this key (see `keys::after_repository`), starting with the one
    /// `within` names when its collection is under way.
    Repositories {
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within: Option<String>,
    },
    Sweeps,
    /// Byte objects after this upload's.
    Bytes {
        after: Option<String>,
    },
    Done,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Holders { .. } => "holders",
            Phase::Repositories { .. } => "repositories",
            Phase::Sweeps => "sweeps",
            Phase::Bytes { .. } => "bytes",
            Phase::Done => "done",
        }
    }

    fn cursor(&self) -> Option<&str> {
        match self {
            Phase::Repositories { within: Some(name), .. } => Some(name),
            Phase::Holders { after } | Phase::Repositories { after, .. } | Phase::Bytes { after } => after.as_deref(),
            _ => None,
        }
    }
}

/// A run as recorded under `keys::GC_RUN`: what `GET /_wharf/gc` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub id: String,
    pub dry_run: bool,
    pub started_ms: u64,
    /// When the last step ended (or the run started).
    pub updated_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// While a step runs: until when it holds the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until_ms: Option<u64>,
    pub steps: u64,
    /// Storage operations of all steps, and of the step that used most.
    pub operations: u64,
    pub max_step_operations: u64,
    pub phase: Phase,
    pub report: GcReport,
}

impl RunState {
    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Not done, and no step has held it or ended for long: its next step was lost.
    pub fn stalled(&self, now_ms: u64) -> bool {
        !self.done()
            && match self.lease_until_ms {
                Some(until) => until < now_ms,
                None => self.updated_ms + STALLED_MS < now_ms,
            }
    }
}

/// What a step works with.
struct Run {
    id: String,
    dry_run: bool,
    started_ms: u64,
    /// Objects written before this are past the grace period.
    cutoff: u64,
    /// Whether manifests no tag reaches are collected in this run.
    untagged: bool,
    /// Whether retention rules are applied in this run: there are some, and every tag is in R2.
    retention: bool,
}

/// One step's line in the log.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StepLine<'a> {
    level: &'static str,
    message: &'static str,
    run: &'a str,
    step: u64,
    /// The phase the step worked in, and where the next one starts.
    phase: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<&'a str>,
    operations: u64,
    kv_operations: u64,
    duration_ms: u64,
    manifests: usize,
    blob_links: usize,
    blobs: usize,
    bytes_freed: u64,
    done: bool,
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

// Kept as a list of pairs in the progress a step saves (see `repository`).
impl<T: Serialize> Serialize for DigestMap<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for DigestMap<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(Vec::<(Digest, T)>::deserialize(deserializer)?.into_iter().collect())
    }
}

impl FromIterator<Digest> for DigestSet {
    fn from_iter<I: IntoIterator<Item = Digest>>(digests: I) -> Self {
        digests.into_iter().map(|d| (d, ())).collect()
    }
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

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// The run going on, or the last one.
    pub async fn gc_run(&self) -> Result<Option<RunState>> {
        Ok(self.read_run().await?.map(|(_, state)| state))
    }

    async fn read_run(&self) -> Result<Option<(ObjectMeta, RunState)>> {
        let Some((meta, bytes)) = self.objects.get_bytes(keys::GC_RUN).await? else { return Ok(None) };
        let state = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::internal(format!("the garbage collection state is malformed: {e}")))?;
        Ok(Some((meta, state)))
    }

    /// Writes the run's state if it is still the one read (`etag`); `None` when it was not.
    async fn write_run(&self, state: &RunState, etag: Option<String>) -> Result<Option<ObjectMeta>> {
        let bytes = serde_json::to_vec(state).map_err(RegistryError::internal)?;
        let options = PutOptions { if_etag_matches: etag, ..PutOptions::default() };
        Ok(self.objects.put(keys::GC_RUN, bytes, options).await?)
    }

    /// Starts a run at `now_ms`, unless one is going on. Returns the run, and whether it is new.
    pub async fn start_gc(&self, now_ms: u64, dry_run: bool) -> Result<(RunState, bool)> {
        let last = self.read_run().await?;
        if let Some((_, state)) = &last
            && !state.done()
        {
            return Ok((state.clone(), false));
        }
        let state = RunState {
            id: UploadId::random()?.to_string(),
            dry_run,
            started_ms: now_ms,
            updated_ms: now_ms,
            finished_ms: None,
            lease_until_ms: None,
            steps: 0,
            operations: 0,
            max_step_operations: 0,
            phase: Phase::Start,
            report: GcReport { dry_run, ..GcReport::default() },
        };
        match self.write_run(&state, last.map(|(meta, _)| meta.etag)).await? {
            Some(_) => Ok((state, true)),
            // Another start came first: that run is the one going on.
            None => {
                let (_, state) = self.read_run().await?.ok_or_else(|| RegistryError::internal("gc run vanished"))?;
                Ok((state, false))
            }
        }
    }

    /// Runs the next step of run `id`. `None` when there is none to run: the run is done, is
    /// not the current one, or another step holds it.
    pub async fn gc_step(&self, id: &str) -> Result<Option<RunState>> {
        let now = self.now_ms();
        let Some((meta, mut state)) = self.read_run().await? else { return Ok(None) };
        if state.id != id || state.done() || state.lease_until_ms.is_some_and(|until| until >= now) {
            return Ok(None);
        }
        let (storage, kv) = (self.objects.operations(), self.kv.operations());
        state.lease_until_ms = Some(now + LEASE_MS);
        let Some(leased) = self.write_run(&state, Some(meta.etag)).await? else { return Ok(None) };
        let phase = state.phase.clone();
        let next = match self.step(&mut state, phase.clone()).await {
            Ok(next) => next,
            Err(e) => {
                // Let the next try take over at once (a step that dies instead waits out its lease).
                state.lease_until_ms = None;
                let _ = self.write_run(&state, Some(leased.etag)).await;
                return Err(e);
            }
        };
        // Tags retention removed are notified as deletes, as a client's would be.
        let record = RequestRecord {
            id: state.id.clone(),
            host: String::new(),
            method: "DELETE".into(),
            useragent: "wharf-gc".into(),
        };
        if let Some(body) = self.take_events(&record, Some("wharf-gc")) {
            self.deliver(body).await;
        }
        let ended = self.now_ms();
        state.lease_until_ms = None;
        state.phase = next;
        state.steps += 1;
        state.updated_ms = ended;
        if state.done() {
            state.finished_ms = Some(ended);
        }
        // The final write is counted too.
        let operations = self.objects.operations() + 1 - storage + (self.kv.operations() - kv);
        state.operations += operations;
        state.max_step_operations = state.max_step_operations.max(operations);
        let r = &state.report;
        crate::base::log::info(&StepLine {
            level: "info",
            message: "gc step",
            run: &state.id,
            step: state.steps,
            phase: phase.name(),
            next: state.phase.cursor(),
            operations,
            kv_operations: self.kv.operations() - kv,
            duration_ms: ended.saturating_sub(now),
            manifests: r.manifests.len(),
            blob_links: r.blob_links.len(),
            blobs: r.blobs.len(),
            bytes_freed: r.bytes_freed,
            done: state.done(),
        });
        // Taken over after the lease ran out: that step's state stands.
        Ok(self.write_run(&state, Some(leased.etag)).await?.map(|_| state))
    }

    /// The work of one step in `phase`; returns the phase the next step works in.
    async fn step(&self, state: &mut RunState, phase: Phase) -> Result<Phase> {
        let grace_ms = self.config.gc_grace_secs.saturating_mul(1000);
        let run = Run {
            id: state.id.clone(),
            dry_run: state.dry_run,
            started_ms: state.started_ms,
            cutoff: state.started_ms.saturating_sub(grace_ms),
            untagged: self.config.gc_untagged && !state.report.untagged_deferred,
            retention: !self.config.retention.is_empty() && !state.report.untagged_deferred,
        };
        let report = &mut state.report;
        Ok(match phase {
            Phase::Start => {
                // Untagged collection and retention read the tags from R2: not before every tag
                // is there.
                let reads_tags = self.config.gc_untagged || !self.config.retention.is_empty();
                if reads_tags && !self.tags_in_r2().await? {
                    report.untagged_deferred = !self.copy_kv_tags_to_r2().await?.0;
                }
                match self.indexes_written().await? {
                    true => Phase::Repositories { after: None, within: None },
                    false => Phase::Holders { after: None },
                }
            }
            Phase::Holders { after } => match self.write_missing_indexes(after).await? {
                Some(after) => Phase::Holders { after: Some(after) },
                None => Phase::Repositories { after: None, within: None },
            },
            Phase::Repositories { after, within } => match self
                .collect_repositories(&run, after, within, report)
                .await?
            {
                Some(next) => Phase::Repositories { after: Some(next.after), within: next.within.map(String::from) },
                None => Phase::Sweeps,
            },
            Phase::Sweeps => {
                // Every repository was collected, each dropping its record: those left are of
                // repositories that are gone altogether.
                if !run.dry_run {
                    let records =
                        self.objects.list(keys::GC_SWEEPS_PREFIX, crate::storage::ListFrom::Beginning, 1000).await?;
                    for record in records.objects {
                        self.objects.delete(&record.key).await?;
                    }
                }
                Phase::Bytes { after: None }
            }
            Phase::Bytes { after } => {
                let after = after.map(|a| UploadId::parse(&a)).transpose()?;
                match self.collect_bytes(&run, after, report).await? {
                    Some(after) => Phase::Bytes { after: Some(after.to_string()) },
                    None => Phase::Done,
                }
            }
            Phase::Done => Phase::Done,
        })
    }

    /// Has the run's steps taken: its first message sent to the queue, or, without a queue, every
    /// step run here to the end.
    pub async fn drive_gc(&self, mut state: RunState) -> Result<RunState> {
        if let Some(queue) = &self.gc_steps {
            queue.send(&state.id).await.map_err(|e| RegistryError::internal(format!("gc queue: {e}")))?;
            return Ok(state);
        }
        while !state.done() {
            match self.gc_step(&state.id).await? {
                Some(next) => state = next,
                None => break,
            }
        }
        Ok(state)
    }

    /// What the queue's consumer does with a message: the run's next step, then the message for
    /// the one after.
    pub async fn run_queued_gc_step(&self, id: &str) -> Result<()> {
        if let Some(state) = self.gc_step(id).await?
            && !state.done()
            && let Some(queue) = &self.gc_steps
        {
            queue.send(id).await.map_err(|e| RegistryError::internal(format!("gc queue: {e}")))?;
        }
        Ok(())
    }

    /// The cron trigger's part: a run starts when none is going on, and one whose next step was
    /// lost (see [`RunState::stalled`]) gets another. Returns the run it drove.
    pub async fn tick_gc(&self, dry_run: bool) -> Result<Option<RunState>> {
        let now = self.now_ms();
        let (state, new) = self.start_gc(now, dry_run).await?;
        match new || state.stalled(now) {
            true => Ok(Some(self.drive_gc(state).await?)),
            false => Ok(None),
        }
    }

    /// Starts a run at `now_ms` (or goes on with the one that is going on) and runs its steps
    /// to the end here: what a host without a queue of steps does, and what tests call.
    pub async fn collect_garbage(&self, now_ms: u64, dry_run: bool) -> Result<GcReport> {
        let (mut state, _) = self.start_gc(now_ms, dry_run).await?;
        while !state.done() {
            state = self
                .gc_step(&state.id)
                .await?
                .ok_or_else(|| RegistryError::internal("another garbage collection step holds the run"))?;
        }
        Ok(state.report)
    }
}
