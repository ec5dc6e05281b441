//! The bytes phase: blob bytes no repository holds, and the index entries naming them.
//!
//! A step takes one page of byte objects (`blobs/by-upload/<id>`, in id order) and the holders
//! of the same ids (`holders/<id>/...`, in the same order), read side by side like two sorted
//! files: what it decides on is one page, whatever the size of the registry. An object older
//! than the grace period that no repository holds (every holder `unlinked`) and no pin of this
//! run keeps is removed:
//! 1. the index entry naming it first (the digest comes from its holders), since a mount from
//!    the index checks its entry again after linking (see `gc`);
//! 2. its holders listed again: a repository that linked it meanwhile keeps it;
//! 3. the object, then its holders.

use super::{CONCURRENCY, GcReport, RemovedBlob, Run, add};
use crate::base::names::{Digest, UploadId};
use crate::oci::blobs::BlobLink;
use crate::registry::{Registry, Result};
use crate::storage::keys::{self, Holder};
use crate::storage::{KeyValueStore, ListFrom, Listing, ObjectMeta, ObjectStore};
use futures_util::future::join_all;
use std::collections::BTreeMap;

/// Byte objects a step decides on (one listing).
const OBJECTS_PER_STEP: u32 = 1000;
/// Objects a step removes at most: each costs about five operations.
const REMOVALS_PER_STEP: usize = 100;
/// Holder listings a step reads at most; past them it decides on the objects whose holders
/// it has seen whole.
const HOLDER_PAGES_PER_STEP: u64 = 20;

/// Up to where a step decides.
enum Upto {
    Id(UploadId),
    End,
}

impl Upto {
    fn covers(&self, id: &UploadId) -> bool {
        match self {
            Upto::Id(upto) => id <= upto,
            Upto::End => true,
        }
    }
}

/// What the holders of one object say.
#[derive(Default)]
struct Holding {
    /// A repository links it, or a manifest pins it in this run: it stays.
    kept: bool,
    /// Its digest, from any holder: the index entry that may name it.
    digest: Option<Digest>,
    keys: Vec<String>,
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// One step of the bytes phase: the page of objects after `after`. Returns where the next
    /// step starts; `None` once every object was looked at.
    pub(super) async fn collect_bytes(
        &self,
        run: &Run,
        after: Option<UploadId>,
        report: &mut GcReport,
    ) -> Result<Option<UploadId>> {
        let from = after.as_ref().map(keys::blob_by_upload);
        let page = self
            .objects
            .list(keys::BLOBS_PREFIX, from.as_deref().map_or(ListFrom::Beginning, ListFrom::After), OBJECTS_PER_STEP)
            .await?;
        let more = page.cursor.is_some();
        let objects: Vec<(UploadId, ObjectMeta)> =
            page.objects.into_iter().filter_map(|o| Some((keys::upload_of_object(&o.key)?, o))).collect();
        // Up to where this step decides: the page's last object; on the last page, to the end, so
        // that the holders of objects that are gone, listed after every object, are met too.
        let mut upto = match (more, objects.last()) {
            (true, Some((id, _))) => Upto::Id(id.clone()),
            _ => Upto::End,
        };

        // The holders of the page's ids, read alongside.
        let mut holders: BTreeMap<UploadId, Holding> = BTreeMap::new();
        let mut listing = Listing::after(keys::HOLDERS_PREFIX, after.as_ref().map(keys::after_holders_of));
        let listed_from = self.objects.operations();
        while let Some(meta) = listing.next(&self.objects).await? {
            let Some((id, who)) = keys::parse_holder(&meta.key) else { continue };
            if !upto.covers(&id) {
                break;
            }
            if self.objects.operations() - listed_from > HOLDER_PAGES_PER_STEP {
                // This id's holders may go on in the next page: decide up to the id before.
                let object_before = objects[..objects.partition_point(|(o, _)| *o < id)].last().map(|(o, _)| o);
                let holder_before = holders.range(..&id).next_back().map(|(h, _)| h);
                match object_before.max(holder_before) {
                    Some(before) => upto = Upto::Id(before.clone()),
                    // Its holders alone are more than a step reads: it is held many times over.
                    None => return Ok(Some(id)),
                }
                break;
            }
            let holding = holders.entry(id).or_default();
            holding.kept |= match &who {
                Holder::Repository(_) => {
                    let doomed = run.dry_run && meta.custom.get("doomedIn") == Some(&run.id);
                    meta.custom.get("unlinked").is_none() && !doomed
                }
                Holder::Pin => meta.custom.get("run") == Some(&run.id),
                Holder::Index => false,
            };
            holding.digest = holding.digest.take().or_else(|| Digest::parse(meta.custom.get("digest")?).ok());
            // Only the holders of what may go are kept in memory, to be removed with it.
            match holding.kept {
                true => holding.keys.clear(),
                false => holding.keys.push(meta.key),
            }
        }

        let mut doomed = Vec::new();
        let mut next = match &upto {
            Upto::Id(id) => Some(id.clone()),
            Upto::End => None,
        };
        for (id, object) in objects.iter().filter(|(id, _)| upto.covers(id)) {
            let holding = holders.remove(id).unwrap_or_default();
            if holding.kept || object.uploaded_ms >= run.cutoff {
                continue;
            }
            if doomed.len() == REMOVALS_PER_STEP {
                // The rest waits for the next step, from the last object decided on.
                next = doomed.last().map(|(id, _, _): &(UploadId, &ObjectMeta, Holding)| id.clone());
                break;
            }
            doomed.push((id.clone(), object, holding));
        }
        // Holders of objects that are gone (a step stopped between an object and its holders, or
        // an index entry older than holders naming bytes long gone).
        let orphans: Vec<(UploadId, Holding)> = holders
            .into_iter()
            .filter(|(id, h)| {
                !h.kept && upto.covers(id) && objects.binary_search_by(|(listed, _)| listed.cmp(id)).is_err()
            })
            .take(REMOVALS_PER_STEP.saturating_sub(doomed.len()))
            .collect();
        if run.dry_run {
            for (_, object, holding) in &doomed {
                if let Some(digest) = &holding.digest
                    && self.index_names(digest, &object.key).await?.is_some()
                {
                    add(&mut report.index_entries, digest.to_string(), &mut report.more);
                }
                report.bytes_freed += object.size;
                add(&mut report.blobs, RemovedBlob { object: object.key.clone(), size: object.size }, &mut report.more);
            }
            return Ok(next);
        }
        for batch in doomed.chunks(CONCURRENCY) {
            let removals = batch.iter().map(|(id, object, holding)| self.remove_bytes(id, object, holding));
            for (removed, (_, object, holding)) in join_all(removals).await.into_iter().zip(batch) {
                let Some(index_entry) = removed? else { continue };
                if index_entry {
                    let digest = holding.digest.as_ref().map(Digest::to_string).unwrap_or_default();
                    add(&mut report.index_entries, digest, &mut report.more);
                }
                report.bytes_freed += object.size;
                add(&mut report.blobs, RemovedBlob { object: object.key.clone(), size: object.size }, &mut report.more);
            }
        }
        for (id, holding) in orphans {
            if self.remove_orphan_holders(&id, &holding).await? {
                let digest = holding.digest.as_ref().map(Digest::to_string).unwrap_or_default();
                add(&mut report.index_entries, digest, &mut report.more);
            }
        }
        Ok(next)
    }

    /// Removes the holders of an object that is gone, and the index entry naming it; whether
    /// there was one.
    async fn remove_orphan_holders(&self, id: &UploadId, holding: &Holding) -> Result<bool> {
        let object = keys::blob_by_upload(id);
        // Written after the listing of objects: not an orphan.
        if self.objects.head(&object).await?.is_some() {
            return Ok(false);
        }
        let mut index_entry = false;
        if let Some(digest) = &holding.digest
            && let Some(entry) = self.index_names(digest, &object).await?
        {
            self.objects.delete(&entry).await?;
            index_entry = true;
        }
        for key in &holding.keys {
            self.objects.delete(key).await?;
        }
        Ok(index_entry)
    }

    /// The key of the index entry of `digest` when it names `object`.
    async fn index_names(&self, digest: &Digest, object: &str) -> Result<Option<String>> {
        let entry = self.objects.head(&keys::blob_index(digest)).await?;
        Ok(entry.filter(|e| BlobLink::from_metadata(&e.custom).is_some_and(|l| l.object == object)).map(|e| e.key))
    }

    /// Steps 1 to 3 for one object: `None` when a repository linked it meanwhile, else whether an
    /// index entry named it.
    async fn remove_bytes(&self, id: &UploadId, object: &ObjectMeta, holding: &Holding) -> Result<Option<bool>> {
        let mut index_entry = false;
        if let Some(digest) = &holding.digest
            && let Some(entry) = self.index_names(digest, &object.key).await?
        {
            self.objects.delete(&entry).await?;
            index_entry = true;
        }
        let mut again = Listing::new(keys::holders_prefix(id));
        while let Some(meta) = again.next(&self.objects).await? {
            if matches!(keys::parse_holder(&meta.key), Some((_, Holder::Repository(_))))
                && meta.custom.get("unlinked").is_none()
            {
                return Ok(None);
            }
        }
        self.objects.delete(&object.key).await?;
        for key in &holding.keys {
            self.objects.delete(key).await?;
        }
        Ok(Some(index_entry))
    }
}
