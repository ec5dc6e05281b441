//! Every R2 and KV key wharf reads or writes is built here, and only here.
//!
//! ```text
//! R2 bucket (binding BUCKET)
//! ├── repositories/<name>/
//! │   ├── _manifests/<alg>/<hex>   manifest bytes exactly as pushed; httpMetadata.contentType
//! │   │                            is the pushed media type
//! │   ├── _layers/<alg>/<hex>      blob link: empty body; customMetadata {object, size} names
//! │   │                            the object holding the bytes. Its presence is what "this
//! │   │                            repository holds the blob" means.
//! │   ├── _tags/<tag>              the tag: empty body; customMetadata the tag record. The
//! │   │                            source of truth for tags (R2 is strongly consistent); KV's
//! │   │                            copy is the fast path of pulls (see `oci::tags`)
//! │   ├── _tagged/<alg>/<hex>/<tag> the tag may name this manifest: written before the tag
//! │   │                            object, removed after it moves or goes, so one listing finds
//! │   │                            the tags a DELETE by digest removes (each checked against
//! │   │                            its tag object)
//! │   └── _referrers/<subject alg>/<subject hex>/<alg>/<hex>
//! │                                a manifest of this repository whose `subject` is the first
//! │                                digest: empty body, its descriptor in customMetadata, so one
//! │                                listing answers GET /v2/<name>/referrers/<subject>
//! ├── blobs/by-upload/<id>        blob bytes written by upload <id> (a session, a single-request
//! │                                upload or a pull-through fetch): by one put that R2 verified
//! │                                against the digest, or as an R2 multipart upload completed
//! │                                only after the digest verified, so never visible half-written.
//! │                                Completing in place means no copy. One key per upload, never
//! │                                rewritten: garbage collection relies on it (see `gc`).
//! ├── catalog/<name>                the repository holds at least one manifest (empty body);
//! │                                listed with startAfter for GET /v2/_catalog
//! ├── digests/<alg>/<hex>          registry-wide record of a blob: empty body, customMetadata
//! │                                {object, size} as a link; lets a mount without `from` find it.
//! │                                Written after a holder of its object (below), so an entry
//! │                                whose object has no holder left is one no upload is writing
//! ├── holders/<id>/<holder>        who holds the bytes of `blobs/by-upload/<id>`, so that garbage
//! │                                collection decides on a page of byte objects from one listing
//! │                                of their holders (see `gc::bytes`); empty body, customMetadata
//! │                                {digest[, unlinked][, run]}. <holder> is a repository <name>
//! │                                whose link names the object, written before the link; when
//! │                                the link goes, rewritten with `unlinked`. `~pin`: a manifest
//! │                                references the blob through no link, as the collection run
//! │                                <run> found it. `~index`: the index entry names the object
//! │                                (written for entries older than holders)
//! ├── migrations/indexes           the writing of holders and `_tagged` entries for the links,
//! │                                index entries and tags older than them: `done` once written
//! ├── migrations/tags              the copy of tags kept in KV alone (before R2 held tags) into
//! │                                R2: where it stands, as the KV cursor to go on from, or
//! │                                `done` (see `ops::migrate`)
//! ├── gc/repository                garbage collection: a repository whose collection spans
//! │                                steps, as JSON: what its listing and mark found so far
//! ├── gc/run                       garbage collection: the run going on, or the last one, as
//! │                                JSON (see `gc::RunState`): phase, cursor, report
//! ├── gc/sweeps/<name>             garbage collection: the blob links a sweep of <name> is about
//! │                                to remove, as JSON {digest: link metadata}; deleted once the
//! │                                sweep's re-check is done, so one left over tells the next run
//! │                                which links it may have to put back (see `gc`)
//! ├── selftest/...                 written only by the test-only endpoints (WHARF_SELFTEST)
//! └── uploads/<id>/state           upload session: a JSON line (see uploads::SessionState),
//!                                  then the bytes received but not yet cut into a part
//!
//! KV namespace (binding TAGS)
//! └── tags/<name>:<tag>            a copy of the tag for pulls: value the digest, metadata
//!                                  the tag record {digest, mediaType, size[, cachedAt]}
//! ```
//!
//! Names never contain `:` and tags never contain `/` or `:`, so `tags/<name>:` is a prefix that
//! lists one repository's tags and nothing else; name components start with `[a-z0-9]`, so
//! `_manifests` and `_layers` cannot collide with a nested repository.

use crate::base::de::Object;
use crate::base::error::RegistryError;
use crate::base::media::MediaType;
use crate::base::names::{Digest, RepositoryName, Tag, UploadId};
use crate::storage::Metadata;
use serde::{Deserialize, Serialize};

fn digest_path(d: &Digest) -> String {
    format!("{}/{}", d.algorithm().as_str(), d.hex())
}

pub fn manifest(name: &RepositoryName, d: &Digest) -> String {
    format!("{}{}", manifests_prefix(name), digest_path(d))
}

/// Prefix of every manifest of a repository (to tell whether any is left).
pub fn manifests_prefix(name: &RepositoryName) -> String {
    format!("{REPOSITORIES_PREFIX}{name}/_manifests/")
}

/// Prefix of every repository's manifests, blob links and referrer entries.
pub const REPOSITORIES_PREFIX: &str = "repositories/";

/// What a key under [`REPOSITORIES_PREFIX`] is.
#[derive(Debug, PartialEq)]
pub enum RepositoryKey {
    Manifest(Digest),
    BlobLink(Digest),
    Referrer,
    Tag(Tag),
    /// An entry of the index of tags by manifest.
    Tagged,
}

/// Reads a key under [`REPOSITORIES_PREFIX`]. The name ends at the first `/_`: no name
/// component starts with `_`.
pub fn parse_repository_key(key: &str) -> Option<(RepositoryName, RepositoryKey)> {
    let (name, rest) = key.strip_prefix(REPOSITORIES_PREFIX)?.split_once("/_")?;
    let digest = |path: &str| {
        let (alg, hex) = path.split_once('/')?;
        Digest::parse(&format!("{alg}:{hex}")).ok()
    };
    let kind = if let Some(path) = rest.strip_prefix("manifests/") {
        RepositoryKey::Manifest(digest(path)?)
    } else if let Some(path) = rest.strip_prefix("layers/") {
        RepositoryKey::BlobLink(digest(path)?)
    } else if rest.starts_with("referrers/") {
        RepositoryKey::Referrer
    } else if let Some(tag) = rest.strip_prefix("tags/") {
        RepositoryKey::Tag(Tag::parse(tag).ok()?)
    } else if rest.starts_with("tagged/") {
        RepositoryKey::Tagged
    } else {
        return None;
    };
    Some((RepositoryName::parse(name).ok()?, kind))
}

/// A listing of `repositories/` from here starts at the repository after `name`: every key of
/// `name` starts with `repositories/<name>/_` and a lower-case letter, all below `_~`. (A
/// nested `<name>/<component>` sorts before it or after `_~`: its keys never interleave.)
pub fn after_repository(name: &RepositoryName) -> String {
    format!("{REPOSITORIES_PREFIX}{name}/_~")
}

/// The key after every key of `name` of the kind of `kind` (`_referrers/`, `_tagged/`, `_tags/`
/// ...): a listing skips past it to leave them out. Digests and tags hold no `~`.
pub fn after_kind(name: &RepositoryName, kind: &RepositoryKey) -> String {
    let folder = match kind {
        RepositoryKey::Manifest(_) => "manifests",
        RepositoryKey::BlobLink(_) => "layers",
        RepositoryKey::Referrer => "referrers",
        RepositoryKey::Tag(_) => "tags",
        RepositoryKey::Tagged => "tagged",
    };
    format!("{REPOSITORIES_PREFIX}{name}/_{folder}/~")
}

/// Prefix of the records of garbage collection sweeps in progress.
pub const GC_SWEEPS_PREFIX: &str = "gc/sweeps/";

pub fn gc_sweep(name: &RepositoryName) -> String {
    format!("{GC_SWEEPS_PREFIX}{name}")
}

/// The repository of a key listed under [`GC_SWEEPS_PREFIX`].
pub fn repository_of_sweep(key: &str) -> Option<RepositoryName> {
    RepositoryName::parse(key.strip_prefix(GC_SWEEPS_PREFIX)?).ok()
}

/// Where the garbage collection run going on, or the last one, is recorded.
pub const GC_RUN: &str = "gc/run";

/// Garbage collection: how far the collection of a repository too large for one step got.
pub const GC_REPOSITORY: &str = "gc/repository";

/// Prefix of every holder of blob bytes.
pub const HOLDERS_PREFIX: &str = "holders/";

/// Who holds blob bytes (see the tree above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A repository whose link names the object (or named it, `unlinked`).
    Repository(RepositoryName),
    /// A manifest references the blob through no link (its link was deleted).
    Pin,
    /// The registry-wide index entry names the object.
    Index,
}

/// The upload whose bytes a link names; `None` for a key that is no blob object.
pub fn upload_of_object(object: &str) -> Option<UploadId> {
    UploadId::parse(object.strip_prefix(BLOBS_PREFIX)?.strip_prefix("by-upload/")?).ok()
}

/// The holder key of `who` for the bytes of `upload`.
pub fn holder(upload: &UploadId, who: &Holder) -> String {
    match who {
        Holder::Repository(name) => format!("{}{name}", holders_prefix(upload)),
        Holder::Pin => format!("{}~pin", holders_prefix(upload)),
        Holder::Index => format!("{}~index", holders_prefix(upload)),
    }
}

/// Prefix of every holder of the bytes of `upload`.
pub fn holders_prefix(upload: &UploadId) -> String {
    format!("{HOLDERS_PREFIX}{upload}/")
}

/// A listing of holders from here starts at the holders of the first upload after `upload`:
/// `~` sorts after every character of a name and after `~index` and `~pin`.
pub fn after_holders_of(upload: &UploadId) -> String {
    format!("{}~~", holders_prefix(upload))
}

/// The upload and holder of a key listed under [`HOLDERS_PREFIX`].
pub fn parse_holder(key: &str) -> Option<(UploadId, Holder)> {
    let (id, who) = key.strip_prefix(HOLDERS_PREFIX)?.split_once('/')?;
    let who = match who {
        "~pin" => Holder::Pin,
        "~index" => Holder::Index,
        name => Holder::Repository(RepositoryName::parse(name).ok()?),
    };
    Some((UploadId::parse(id).ok()?, who))
}

/// Whether holders and `_tagged` entries were written for what is older than them (see
/// `ops::migrate`).
pub const INDEXES_MIGRATION: &str = "migrations/indexes";

/// Prefix of the registry-wide blob index.
pub const BLOB_INDEX_PREFIX: &str = "digests/";

/// Prefix of every object holding blob bytes.
pub const BLOBS_PREFIX: &str = "blobs/";

/// Prefix of the referrers of `subject` in a repository.
pub fn referrers_prefix(name: &RepositoryName, subject: &Digest) -> String {
    format!("repositories/{name}/_referrers/{}/", digest_path(subject))
}

pub fn referrer(name: &RepositoryName, subject: &Digest, referrer: &Digest) -> String {
    format!("{}{}", referrers_prefix(name, subject), digest_path(referrer))
}

/// The referrer's digest of a key listed under [`referrers_prefix`].
pub fn referrer_of(key: &str, prefix: &str) -> Option<Digest> {
    let (alg, hex) = key.strip_prefix(prefix)?.split_once('/')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

/// Where one run of the storage self-test works (see `selftest`).
#[cfg(feature = "selftest")]
pub fn selftest_run(run: &UploadId) -> String {
    format!("selftest/{run}/")
}

/// The object the benchmark's baseline put writes: a new one per blob, as a blob upload writes
/// (overwriting one object each time measured slower in the local R2).
#[cfg(feature = "selftest")]
pub fn selftest_put(digest: &Digest) -> String {
    format!("selftest/put/{}", digest_path(digest))
}

/// The object and the KV key the benchmark's floor of a manifest push writes: one each, the
/// same every time, as a re-push of one manifest to one tag would.
#[cfg(feature = "selftest")]
pub const SELFTEST_FLOOR: &str = "selftest/floor";

/// Prefix of the repository index listed by the catalog.
pub const CATALOG_PREFIX: &str = "catalog/";

pub fn catalog_entry(name: &RepositoryName) -> String {
    format!("{CATALOG_PREFIX}{name}")
}

/// The catalog key of a name given by a client as `last`, unchecked: only listed after.
pub fn catalog_key(name: &str) -> String {
    format!("{CATALOG_PREFIX}{name}")
}

/// The repository of a key listed under [`CATALOG_PREFIX`].
pub fn repository_of(key: &str) -> Option<RepositoryName> {
    RepositoryName::parse(key.strip_prefix(CATALOG_PREFIX)?).ok()
}

/// Whether a location's cache may keep the object under `key`: blob bytes, which never change
/// and are only ever reached through a repository's link, so a copy outliving a delete (a
/// location cache cannot be purged everywhere) is never served. Manifests are not: the manifest
/// object is itself what says a manifest exists.
pub fn edge_cacheable(key: &str) -> bool {
    key.starts_with(BLOBS_PREFIX)
}

pub fn blob_link(name: &RepositoryName, d: &Digest) -> String {
    format!("{}{}", blob_links_prefix(name), digest_path(d))
}

/// Prefix of every blob link of a repository.
pub fn blob_links_prefix(name: &RepositoryName) -> String {
    format!("{REPOSITORIES_PREFIX}{name}/_layers/")
}

pub fn blob_by_upload(id: &UploadId) -> String {
    format!("{BLOBS_PREFIX}by-upload/{id}")
}

/// Prefix of every upload session object.
pub const UPLOADS_PREFIX: &str = "uploads/";

pub fn upload_state(id: &UploadId) -> String {
    format!("{UPLOADS_PREFIX}{id}/state")
}

/// The session id of an upload state key (for the cleanup, which finds them by listing).
pub fn upload_of_state(key: &str) -> Option<UploadId> {
    let id = key.strip_prefix(UPLOADS_PREFIX)?.strip_suffix("/state")?;
    UploadId::parse(id).ok()
}

/// Registry-wide record of a blob (empty body; customMetadata {object, size}): where its
/// bytes are, for mounts that do not name a source repository.
pub fn blob_index(d: &Digest) -> String {
    format!("{BLOB_INDEX_PREFIX}{}", digest_path(d))
}

/// The KV copy of a tag.
pub fn tag(name: &RepositoryName, tag: &Tag) -> String {
    format!("{KV_TAGS_PREFIX}{name}:{tag}")
}

/// Prefix of every tag's KV copy.
pub const KV_TAGS_PREFIX: &str = "tags/";

/// The repository and tag of a KV key listed under [`KV_TAGS_PREFIX`]. Names never hold `:`.
pub fn tag_of_kv_key(key: &str) -> Option<(RepositoryName, Tag)> {
    let (name, tag) = key.strip_prefix(KV_TAGS_PREFIX)?.split_once(':')?;
    Some((RepositoryName::parse(name).ok()?, Tag::parse(tag).ok()?))
}

/// Where the copy of KV-only tags into R2 stands (see `ops::migrate`).
pub const TAGS_MIGRATION: &str = "migrations/tags";

/// The tag in R2, the source of truth.
pub fn tag_object(name: &RepositoryName, tag: &Tag) -> String {
    format!("{}{tag}", tag_objects_prefix(name))
}

/// The R2 prefix under which all of one repository's tags are listed, in tag order.
pub fn tag_objects_prefix(name: &RepositoryName) -> String {
    format!("{REPOSITORIES_PREFIX}{name}/_tags/")
}

/// The entry saying `tag` may name manifest `d`.
pub fn tagged(name: &RepositoryName, d: &Digest, tag: &Tag) -> String {
    format!("{}{tag}", tagged_prefix(name, d))
}

/// Prefix of the entries of the tags that may name manifest `d`.
pub fn tagged_prefix(name: &RepositoryName, d: &Digest) -> String {
    format!("{REPOSITORIES_PREFIX}{name}/_tagged/{}/", digest_path(d))
}

/// The tag of a key listed under [`tag_objects_prefix`].
pub fn tag_of(key: &str, prefix: &str) -> Option<Tag> {
    Tag::parse(key.strip_prefix(prefix)?).ok()
}

/// What a tag points at (the KV metadata of `tags/<name>:<tag>`; well under KV's 1024 bytes):
/// `{"digest","mediaType","size"[,"cachedAt"]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// Pull-through cache mode: when the upstream last confirmed the tag (seconds since the
    /// epoch). Absent (or null) for pushed tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_at: Option<u64>,
}

impl TagRecord {
    /// The record as KV metadata.
    pub fn to_json(&self) -> serde_json::Value {
        // A struct of strings and integers always converts.
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The record in KV metadata; `None` when the metadata is not one.
    pub fn from_json(v: &serde_json::Value) -> Option<TagRecord> {
        Object::<TagRecord>::deserialize(v).ok().map(|o| o.0)
    }

    /// The record as the R2 tag object's custom metadata.
    pub fn to_metadata(&self) -> Metadata {
        let mut m = Metadata::new();
        m.insert("digest", self.digest.as_str());
        m.insert("mediaType", self.media_type.as_str());
        m.insert("size", self.size.to_string());
        if let Some(at) = self.cached_at {
            m.insert("cachedAt", at.to_string());
        }
        m
    }

    /// The record in an R2 tag object's custom metadata; `None` when it is not one.
    pub fn from_metadata(m: &Metadata) -> Option<TagRecord> {
        let cached_at = match m.get("cachedAt") {
            Some(at) => Some(at.parse().ok()?),
            None => None,
        };
        Some(TagRecord {
            digest: m.get("digest")?.clone(),
            media_type: m.get("mediaType")?.clone(),
            size: m.get("size")?.parse().ok()?,
            cached_at,
        })
    }

    pub fn digest(&self) -> Result<Digest, RegistryError> {
        Digest::parse(&self.digest)
            .map_err(|_| RegistryError::internal(format!("a tag holds a malformed digest: {}", self.digest)))
    }

    /// The manifest's media type, when the record has one.
    pub fn media_type(&self) -> Option<MediaType> {
        MediaType::parse(&self.media_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_documented_tree() {
        let name = RepositoryName::parse("a/b").unwrap();
        let d = Digest::sha256_of(b"x");
        let hex = d.hex().to_owned();
        let id = UploadId::parse(&"0".repeat(32)).unwrap();
        assert_eq!(manifest(&name, &d), format!("repositories/a/b/_manifests/sha256/{hex}"));
        assert_eq!(blob_link(&name, &d), format!("repositories/a/b/_layers/sha256/{hex}"));
        assert_eq!(blob_by_upload(&id), format!("blobs/by-upload/{}", "0".repeat(32)));
        assert_eq!(upload_state(&id), format!("uploads/{}/state", "0".repeat(32)));
        assert_eq!(upload_of_state(&upload_state(&id)), Some(id.clone()));
        assert_eq!(upload_of_state("uploads/x/state"), None);
        assert_eq!(blob_index(&d), format!("digests/sha256/{hex}"));
        let r = Digest::sha256_of(b"r");
        let key = referrer(&name, &d, &r);
        assert_eq!(key, format!("repositories/a/b/_referrers/sha256/{hex}/sha256/{}", r.hex()));
        assert_eq!(referrer_of(&key, &referrers_prefix(&name, &d)), Some(r));
        assert_eq!(catalog_entry(&name), "catalog/a/b");
        assert_eq!(repository_of("catalog/a/b"), Some(name.clone()));
        assert_eq!(manifests_prefix(&name), "repositories/a/b/_manifests/");
        let v1 = Tag::parse("v1").unwrap();
        assert_eq!(tag(&name, &v1), "tags/a/b:v1");
        assert_eq!(tag_of_kv_key(&tag(&name, &v1)), Some((name.clone(), v1.clone())));
        assert_eq!(tag_of_kv_key("tags/a/b"), None);
        assert_eq!(tag_object(&name, &v1), "repositories/a/b/_tags/v1");
        assert_eq!(tag_of(&tag_object(&name, &v1), &tag_objects_prefix(&name)), Some(v1.clone()));
        assert_eq!(parse_repository_key(&tag_object(&name, &v1)), Some((name.clone(), RepositoryKey::Tag(v1))));
        assert_eq!(
            parse_repository_key(&manifest(&name, &d)),
            Some((name.clone(), RepositoryKey::Manifest(d.clone())))
        );
        assert_eq!(
            parse_repository_key(&blob_link(&name, &d)),
            Some((name.clone(), RepositoryKey::BlobLink(d.clone())))
        );
        assert_eq!(parse_repository_key(&key), Some((name.clone(), RepositoryKey::Referrer)));
        let v2 = Tag::parse("v2").unwrap();
        assert_eq!(tagged(&name, &d, &v2), format!("repositories/a/b/_tagged/sha256/{hex}/v2"));
        assert_eq!(tag_of(&tagged(&name, &d, &v2), &tagged_prefix(&name, &d)), Some(v2.clone()));
        assert_eq!(parse_repository_key(&tagged(&name, &d, &v2)), Some((name.clone(), RepositoryKey::Tagged)));
        let nested = RepositoryName::parse("a_b/c__d").unwrap();
        assert_eq!(parse_repository_key(&blob_link(&nested, &d)), Some((nested, RepositoryKey::BlobLink(d.clone()))));
        assert_eq!(parse_repository_key("repositories/a/_other/x"), None);
        assert_eq!(repository_of_sweep(&gc_sweep(&name)), Some(name.clone()));
        assert_eq!(parse_repository_key("repositories/a/_layers/sha256/zz"), None);
        assert_eq!(upload_of_object(&blob_by_upload(&id)), Some(id.clone()));
        assert_eq!(upload_of_object("blobs/elsewhere/x"), None);
        for who in [Holder::Repository(name.clone()), Holder::Pin, Holder::Index] {
            let key = holder(&id, &who);
            assert_eq!(parse_holder(&key), Some((id.clone(), who)));
            assert!(key.starts_with(&holders_prefix(&id)) && key < after_holders_of(&id), "{key}");
        }
        assert_eq!(holder(&id, &Holder::Repository(name.clone())), format!("holders/{id}/a/b"));
    }

    #[test]
    fn after_a_repository_comes_the_next_one_and_nothing_of_its_own() {
        let a = RepositoryName::parse("a").unwrap();
        let d = Digest::sha256_of(b"x");
        let t = Tag::parse("zz").unwrap();
        let after = after_repository(&a);
        for own in [manifest(&a, &d), blob_link(&a, &d), tag_object(&a, &t), referrer(&a, &d, &d), tagged(&a, &d, &t)] {
            assert!(own < after, "{own}");
        }
        for next in ["a/b", "a0", "b"] {
            let next = RepositoryName::parse(next).unwrap();
            assert!(blob_link(&next, &d) > after, "{next}");
        }
        // Before `a` in key order, so listed (and collected) before it.
        for before in ["a-b", "a/0"] {
            let before = RepositoryName::parse(before).unwrap();
            assert!(tag_object(&before, &t) < blob_link(&a, &d), "{before}");
        }
    }

    #[test]
    fn holders_list_in_the_order_of_their_objects() {
        let ids = ["0".repeat(32), format!("{}1", "0".repeat(31)), "f".repeat(32)];
        let ids: Vec<UploadId> = ids.iter().map(|i| UploadId::parse(i).unwrap()).collect();
        let deep = RepositoryName::parse("z/z/z").unwrap();
        for pair in ids.windows(2) {
            assert!(blob_by_upload(&pair[0]) < blob_by_upload(&pair[1]));
            assert!(holder(&pair[0], &Holder::Repository(deep.clone())) < holder(&pair[1], &Holder::Index));
            assert!(after_holders_of(&pair[0]) < holders_prefix(&pair[1]));
        }
    }

    #[test]
    fn only_blob_bytes_are_kept_by_location_caches() {
        let name = RepositoryName::parse("a/b").unwrap();
        let d = Digest::sha256_of(b"x");
        let id = UploadId::parse(&"0".repeat(32)).unwrap();
        assert!(edge_cacheable(&blob_by_upload(&id)));
        let others =
            [manifest(&name, &d), blob_link(&name, &d), blob_index(&d), upload_state(&id), catalog_entry(&name)];
        for key in others {
            assert!(!edge_cacheable(&key), "{key}");
        }
    }

    #[test]
    fn a_repository_tag_prefix_does_not_cover_nested_repositories() {
        let parent = RepositoryName::parse("a").unwrap();
        let child = RepositoryName::parse("a/b").unwrap();
        let t = Tag::parse("v1").unwrap();
        assert!(!tag_object(&child, &t).starts_with(&tag_objects_prefix(&parent)));
    }

    #[test]
    fn a_tag_record_survives_object_metadata() {
        let mut record = TagRecord { digest: "sha256:ab".into(), media_type: "m".into(), size: 7, cached_at: None };
        assert_eq!(TagRecord::from_metadata(&record.to_metadata()), Some(record.clone()));
        record.cached_at = Some(12);
        assert_eq!(TagRecord::from_metadata(&record.to_metadata()), Some(record));
        assert_eq!(TagRecord::from_metadata(&Metadata::new()), None);
    }
}
