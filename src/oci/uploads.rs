//! `/v2/<name>/blobs/uploads/`: blob uploads, monolithic (POST ?digest=) and in sessions
//! (POST, PATCH..., PUT ?digest=), as docker, skopeo and containerd do them.
//!
//! Bytes stream through in chunks and never sit whole in memory: they are hashed (sha256,
//! resumable across requests: see `hashing`) as they pass and cut into equal parts of one R2
//! multipart upload. A chunk of announced length streams each part it completes to R2 while it
//! arrives; what is left over after a request (less than a part) is carried in the session
//! object to the next one. The part size is chosen from the first chunk's length (see
//! [`part_size_for`]), so a client sending chunks of one size leaves nothing to carry. The
//! digest is checked before the blob becomes visible: a mismatch aborts the multipart upload,
//! so nothing is ever readable under a wrong digest. Blobs smaller than a part are written with
//! one put once verified. A session finished with a sha512 digest is checked by reading the
//! blob back once, as Distribution does: see [`SESSION_ALGORITHM`].
//!
//! The session (R2 object `uploads/<id>/state`: a JSON line, then the carried bytes) lives in
//! strongly consistent R2, so any isolate in any location can continue it; it is rewritten
//! only if unchanged since it was read (conditional put), so two racing requests cannot both
//! extend it.

use crate::base::error::body_error;
use crate::base::error::{ErrorCode, RegistryError};
use crate::base::hashing::Hasher;
use crate::base::http::{BodyReader, Headers, OCTET_STREAM, Response};
use crate::base::names::{Algorithm, Digest, RepositoryName, UploadId};
use crate::base::router::{blob_url, upload_url};
use crate::config::GcMode;
use crate::oci::blobs::{BlobLink, Hold};
use crate::registry::{Registry, Result};
use crate::storage::keys;
use crate::storage::retry::Retrying;
use crate::storage::{
    ByteRange, KeyValueStore, Listing, MAX_PARTS, MIN_PART_SIZE, ObjectStore, Part, PartSource, PutOptions,
};
use futures_util::future::join;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

/// Size of every multipart part but the last unless the first chunk suggests another: R2's
/// minimum.
pub const PART_SIZE: usize = MIN_PART_SIZE;

/// The largest part size a session may choose. A chunk of unknown length is gathered a part at
/// a time, one part being read while the one before is written, so this bounds its memory
/// (2 x 8 MiB of the Worker's 128 MB; 16 MiB parts were no faster here). A chunk of announced
/// length streams its parts and holds one read at a time.
pub const MAX_PART_SIZE: usize = 8 * 1024 * 1024;

/// The part size for a session whose first chunk announces `length` bytes: the chunk length
/// itself, or an exact fraction of it, when that is a valid part size. Chunked clients (oras,
/// regctl, podman) send equal chunks, so every chunk then ends on a part boundary and nothing
/// is carried between requests. Carrying costs an R2 read and write of up to a part per request.
pub fn part_size_for(length: Option<u64>) -> usize {
    let Some(length) = length.and_then(|l| usize::try_from(l).ok()) else { return PART_SIZE };
    // The fewest parts per chunk first; a few candidates are enough for chunk sizes clients use.
    (length.div_ceil(MAX_PART_SIZE).max(1)..=length / PART_SIZE)
        .take(8)
        .find(|&k| length % k == 0)
        .map_or(PART_SIZE, |k| length / k)
}

/// What a session hashes as the bytes arrive. The client names its digest only in the last
/// request; every client in use names a sha256 one. The spec also allows sha512: such a
/// session is checked by reading the blob back once at the end, as Distribution does
/// (registry/storage/blobwriter.go, "they'll just have to be patient"). Hashing both on the way
/// cost a third of a chunked upload's throughput here, for a digest no client sends. (A
/// monolithic upload names its digest first and hashes only that algorithm.)
const SESSION_ALGORITHM: Algorithm = Algorithm::Sha256;

/// Largest body written with one put (R2 takes up to 5 GiB in one; larger goes in parts).
pub(crate) const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024 - 5 * 1024 * 1024;

/// Custom metadata of a session object naming its R2 multipart upload.
const MULTIPART_META: &str = "multipart";

/// What an upload session remembers between requests, stored as a JSON line before the
/// buffered bytes.
#[derive(Debug, Serialize, Deserialize)]
struct SessionState {
    repository: String,
    /// Bytes received so far.
    size: u64,
    /// Hash state of everything received (hashing::Hasher::save). Sessions written before
    /// sessions hashed sha256 alone hold a sha512 state after it, space-separated (ignored).
    hash: String,
    /// R2 multipart upload id, once the first full part was written (null before).
    #[serde(default, deserialize_with = "crate::base::de::lenient")]
    multipart: Option<String>,
    parts: Vec<Part>,
    /// Size of every part but the last.
    #[serde(default = "default_part_size", deserialize_with = "saved_part_size")]
    part_size: usize,
}

/// Sessions saved before the part size was chosen per upload used R2's minimum.
fn default_part_size() -> usize {
    PART_SIZE
}

/// A part size as saved; R2's minimum when it is not a number, as for the oldest sessions.
fn saved_part_size<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<usize, D::Error> {
    match crate::base::de::lenient::<D, u64>(deserializer)? {
        None => Ok(PART_SIZE),
        Some(n) => usize::try_from(n).map_err(D::Error::custom),
    }
}

impl SessionState {
    fn to_json(&self) -> Vec<u8> {
        // Strings, integers and a list of them always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn from_json(bytes: &[u8]) -> Option<SessionState> {
        crate::base::de::from_object(bytes).ok()
    }
}

/// The bytes on their way to R2: hashed, buffered up to one part, then written as a part.
struct Writer<'a, O> {
    objects: &'a O,
    id: UploadId,
    hasher: Hasher,
    size: u64,
    buffer: Vec<u8>,
    multipart: Option<String>,
    parts: Vec<Part>,
    part_size: usize,
    /// Whether this request started the multipart upload (and must abort it if it fails).
    started_multipart: bool,
}

impl<'a, O: ObjectStore> Writer<'a, O> {
    fn new(objects: &'a O, id: UploadId, algorithm: Algorithm) -> Self {
        Self {
            objects,
            id,
            hasher: Hasher::new(algorithm),
            size: 0,
            buffer: Vec::new(),
            multipart: None,
            parts: Vec::new(),
            part_size: PART_SIZE,
            started_multipart: false,
        }
    }

    /// Sets the part size from the first chunk's announced length; later chunks keep it (R2's
    /// parts must all be equal).
    fn choose_part_size(&mut self, announced: Option<u64>) {
        if self.size == 0 && self.multipart.is_none() {
            self.part_size = part_size_for(announced);
        }
    }

    /// Appends one request's body, of the length announced (see [`announced_length`]) if it
    /// is; more than `limit` bytes in it is 413, a body of another length than announced is
    /// refused. With the length known, each part the body completes is streamed to R2 as it
    /// arrives. Otherwise each full part goes to R2 while the next one is read and hashed, so
    /// that waiting on R2 and on the client overlap. Less than a part is left in `buffer`.
    async fn write<B: BodyReader>(&mut self, body: &mut B, announced: Option<u64>, limit: u64) -> Result<()> {
        self.choose_part_size(announced);
        let mut received = 0u64;
        if let Some(length) = announced {
            while self.buffer.len() as u64 + length.saturating_sub(received) >= self.part_size as u64 {
                self.stream_part(body, limit, &mut received).await?;
            }
        }
        let mut ended = self.fill(body, limit, &mut received).await?;
        while self.buffer.len() >= self.part_size {
            let rest = self.buffer.split_off(self.part_size);
            let part = std::mem::replace(&mut self.buffer, rest);
            let (key, upload, number) = self.next_part().await?;
            let objects = self.objects;
            let uploading = objects.upload_part(&key, &upload, number, part);
            let uploaded = if ended {
                uploading.await
            } else {
                let (uploaded, filled) = join(uploading, self.fill(body, limit, &mut received)).await;
                ended = filled?;
                uploaded
            };
            self.parts.push(uploaded?);
        }
        match announced {
            Some(length) if received < length => Err(body_error("the body ended before its announced length".into())),
            Some(length) if received > length => Err(RegistryError::new(ErrorCode::SizeInvalid)
                .with_detail(json!({ "announced": length, "received": received }))),
            _ => Ok(()),
        }
    }

    /// Sends the next part, the buffered bytes first and then the body's, while they arrive.
    async fn stream_part<B: BodyReader>(&mut self, body: &mut B, limit: u64, received: &mut u64) -> Result<()> {
        let (key, upload, number) = self.next_part().await?;
        let mut feed = PartFeed {
            body,
            hasher: &mut self.hasher,
            size: &mut self.size,
            received,
            limit,
            carried: std::mem::take(&mut self.buffer),
            want: self.part_size,
            leftover: Vec::new(),
            error: None,
        };
        let uploaded = self.objects.upload_part_streamed(&key, &upload, number, self.part_size as u64, &mut feed).await;
        // The body's own failure (broken off, too large) explains a failed part best.
        if let Some(e) = feed.error {
            return Err(e);
        }
        self.buffer = feed.leftover;
        self.parts.push(uploaded?);
        Ok(())
    }

    /// Reads and hashes until a whole part is buffered or the body ends (then `true`).
    async fn fill<B: BodyReader>(&mut self, body: &mut B, limit: u64, received: &mut u64) -> Result<bool> {
        while self.buffer.len() < self.part_size {
            let Some(chunk) = body.chunk().await.map_err(body_error)? else { return Ok(true) };
            *received += chunk.len() as u64;
            if *received > limit {
                return Err(chunk_too_large(limit));
            }
            self.hasher.update(&chunk);
            self.size += chunk.len() as u64;
            self.buffer.extend_from_slice(&chunk);
        }
        Ok(false)
    }

    /// Key, multipart upload id and number of the next part; starts the multipart upload on the
    /// first part. A blob that would need more parts than R2 takes is 413, before R2 refuses it.
    async fn next_part(&mut self) -> Result<(String, String, u16)> {
        if self.parts.len() >= MAX_PARTS {
            return Err(RegistryError::new(ErrorCode::PayloadTooLarge)
                .with_message("blob too large")
                .with_detail(json!({ "parts": MAX_PARTS, "partSize": self.part_size })));
        }
        let key = keys::blob_by_upload(&self.id);
        let upload = match &self.multipart {
            Some(u) => u.clone(),
            None => {
                let options = PutOptions { content_type: Some(OCTET_STREAM.into()), ..Default::default() };
                let u = self.objects.create_multipart(&key, options).await?;
                self.multipart = Some(u.clone());
                self.started_multipart = true;
                u
            }
        };
        // At most MAX_PARTS, checked above.
        let number = (self.parts.len() + 1) as u16;
        Ok((key, upload, number))
    }

    /// Verifies the digest and, only if it matches, returns where the bytes are, for a link to
    /// make them visible. On a mismatch the multipart upload is aborted and nothing is written.
    async fn finish(self, expected: &Digest) -> Result<BlobLink> {
        if expected.algorithm() != self.hasher.algorithm() {
            return self.finish_by_reading_back(expected).await;
        }
        let actual = self.hasher.clone().finish();
        if actual != *expected {
            self.discard().await?;
            return Err(digest_mismatch(expected, Some(actual)));
        }
        self.store().await
    }

    /// For a digest of another algorithm than the one hashed on the way: stores the bytes under
    /// the upload's own key (which no digest names), hashes them read back piece by piece, and
    /// deletes them on a mismatch.
    async fn finish_by_reading_back(self, expected: &Digest) -> Result<BlobLink> {
        let objects = self.objects;
        let link = self.store().await?;
        let mut hasher = Hasher::new(expected.algorithm());
        let mut offset = 0;
        while offset < link.size {
            let length = (link.size - offset).min(MAX_PART_SIZE as u64);
            let bytes = objects
                .read_range(&link.object, ByteRange { offset, length })
                .await?
                .ok_or_else(|| RegistryError::internal("an upload's bytes vanished while being verified"))?;
            hasher.update(&bytes);
            offset += length;
        }
        let actual = hasher.finish();
        if actual != *expected {
            objects.delete(&link.object).await?;
            return Err(digest_mismatch(expected, Some(actual)));
        }
        Ok(link)
    }

    /// Writes what is left and makes the bytes one object under the upload's key.
    async fn store(mut self) -> Result<BlobLink> {
        let size = self.size;
        let object = match self.multipart.clone() {
            Some(upload) => {
                if !self.buffer.is_empty() {
                    let last = std::mem::take(&mut self.buffer);
                    let (key, upload, number) = self.next_part().await?;
                    self.parts.push(self.objects.upload_part(&key, &upload, number, last).await?);
                }
                let key = keys::blob_by_upload(&self.id);
                self.objects.complete_multipart(&key, &upload, &self.parts).await?;
                key
            }
            None => {
                let key = keys::blob_by_upload(&self.id);
                let options = PutOptions { content_type: Some(OCTET_STREAM.into()), ..Default::default() };
                self.objects.put(&key, std::mem::take(&mut self.buffer), options).await?;
                key
            }
        };
        Ok(BlobLink { object, size })
    }

    /// Appends a request's body to a saved session. If the body fails (broken off, too large),
    /// a multipart upload this request started is aborted: the session, not saved, does not
    /// know it. Parts added to an older one are harmless, the next request rewrites their numbers.
    async fn append<B: BodyReader>(&mut self, body: &mut B, announced: Option<u64>, limit: u64) -> Result<()> {
        let result = self.write(body, announced, limit).await;
        if result.is_err()
            && self.started_multipart
            && let Some(upload) = &self.multipart
        {
            self.objects.abort_multipart(&keys::blob_by_upload(&self.id), upload).await?;
        }
        result
    }

    async fn discard(self) -> Result<()> {
        if let Some(upload) = &self.multipart {
            self.objects.abort_multipart(&keys::blob_by_upload(&self.id), upload).await?;
        }
        Ok(())
    }
}

/// The bytes of one streamed part: those carried from earlier (already hashed), then the
/// body's, hashed as they pass. The end of a chunk beyond the part is kept for the next one.
struct PartFeed<'a, B> {
    body: &'a mut B,
    hasher: &'a mut Hasher,
    size: &'a mut u64,
    received: &'a mut u64,
    limit: u64,
    carried: Vec<u8>,
    /// Bytes the part still needs.
    want: usize,
    leftover: Vec<u8>,
    /// Why the body stopped giving bytes before the part was whole.
    error: Option<RegistryError>,
}

impl<B: BodyReader> PartSource for PartFeed<'_, B> {
    async fn next(&mut self) -> Option<Vec<u8>> {
        if self.want == 0 || self.error.is_some() {
            return None;
        }
        let mut bytes = if self.carried.is_empty() {
            let chunk = match self.body.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    self.error = Some(body_error("the body ended before its announced length".into()));
                    return None;
                }
                Err(e) => {
                    self.error = Some(body_error(e));
                    return None;
                }
            };
            *self.received += chunk.len() as u64;
            if *self.received > self.limit {
                self.error = Some(chunk_too_large(self.limit));
                return None;
            }
            self.hasher.update(&chunk);
            *self.size += chunk.len() as u64;
            chunk
        } else {
            std::mem::take(&mut self.carried)
        };
        if bytes.len() > self.want {
            self.leftover = bytes.split_off(self.want);
        }
        self.want -= bytes.len();
        Some(bytes)
    }
}

/// A loaded session: its writer, and the etag of the state object it was read from.
struct Session<'a, O> {
    writer: Writer<'a, Retrying<O>>,
    etag: String,
}

/// The `Range` header of an upload: inclusive, "0-0" before the first byte (as Distribution).
fn range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn chunk_too_large(limit: u64) -> RegistryError {
    RegistryError::new(ErrorCode::PayloadTooLarge)
        .with_message("chunk larger than this registry accepts in one request")
        .with_detail(json!({ "limit": limit }))
}

fn digest_mismatch(expected: &Digest, computed: Option<Digest>) -> RegistryError {
    let computed = computed.map(|d| d.to_string());
    let detail = json!({ "expected": expected.to_string(), "computed": computed });
    RegistryError::new(ErrorCode::DigestInvalid).with_detail(detail)
}

/// Refuses a body whose announced length is already over the limit, before reading it.
fn check_declared_length(headers: &Headers, limit: u64) -> Result<()> {
    match headers.content_length() {
        Some(l) if l > limit => Err(chunk_too_large(limit)),
        _ => Ok(()),
    }
}

/// The query parameters of `POST /v2/<name>/blobs/uploads/`.
#[derive(Debug, Default)]
pub struct StartUpload<'a> {
    /// `digest`: the body is the whole blob.
    pub digest: Option<&'a str>,
    /// `mount`: link this blob from another repository instead of uploading it.
    pub mount: Option<&'a str>,
    /// `from`: the repository to mount from.
    pub from: Option<&'a str>,
}

/// 201 for a blob now in the repository.
fn created<S>(name: &RepositoryName, digest: &Digest) -> Response<S> {
    Response::new(201)
        .header("Location", blob_url(name, digest))
        .header("Docker-Content-Digest", digest.to_string())
        .header("Content-Length", "0")
}

fn upload_unknown(id: &UploadId) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUploadUnknown).with_detail(json!({ "upload": id.as_str() }))
}

fn parse_digest_param(digest: Option<&str>) -> Result<Digest> {
    let d =
        digest.ok_or_else(|| RegistryError::new(ErrorCode::DigestInvalid).with_message("digest parameter missing"))?;
    Digest::parse(d)
}

/// The first and last offsets of a `Content-Range: <start>-<end>` header (inclusive; a `bytes `
/// prefix is tolerated); `Err` when the header is not a range.
fn content_range(value: &str) -> std::result::Result<(u64, u64), ()> {
    let v = value.trim();
    let v = v.strip_prefix("bytes").map(|r| r.trim_start_matches([' ', '='])).unwrap_or(v);
    let (start, end) = v.split_once('-').ok_or(())?;
    let (start, end): (u64, u64) = (start.trim().parse().map_err(|_| ())?, end.trim().parse().map_err(|_| ())?);
    if end < start || end == u64::MAX {
        return Err(());
    }
    Ok((start, end))
}

/// The length of the bytes a request appends to a session standing at `offset`: its
/// Content-Length, or the extent of its Content-Range. A Content-Range must start at `offset`
/// (spec: an out-of-order chunk MUST get 416 RANGE_INVALID), and its extent must be the
/// Content-Length (Distribution's `PatchBlobData`: SIZE_INVALID otherwise). Checked on every
/// request that carries upload bytes, before any is read, so a refusal leaves the session as
/// it was.
fn announced_length(headers: &Headers, offset: u64) -> Result<Option<u64>> {
    let length = headers.content_length();
    let Some(value) = headers.get("content-range") else { return Ok(length) };
    let (start, end) =
        content_range(value).map_err(|_| RegistryError::new(ErrorCode::RangeInvalid).with_detail(value.to_owned()))?;
    if start != offset {
        let detail = json!({ "expectedStart": offset, "contentRange": value });
        return Err(RegistryError::new(ErrorCode::RangeInvalid).with_detail(detail));
    }
    let extent = end - start + 1;
    match length {
        Some(l) if l != extent => Err(RegistryError::new(ErrorCode::SizeInvalid)
            .with_message("the Content-Range and the Content-Length name different lengths")
            .with_detail(json!({ "contentRange": value, "contentLength": l }))),
        _ => Ok(Some(extent)),
    }
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// POST, in three forms:
    /// - `?mount=<digest>&from=<repo>`: when `<repo>` holds the blob, link it here (201; no
    ///   bytes are copied); otherwise a new session (202), as the spec asks. Without `from`, the
    ///   blob is looked up among all repositories (spec: the registry MAY mount from any).
    /// - `?digest=<digest>`: the body is the whole blob (monolithic upload, 201).
    /// - neither: a new session (202).
    pub(crate) async fn start_upload<B: BodyReader<Raw = O::Upload>>(
        &self,
        name: &RepositoryName,
        params: &StartUpload<'_>,
        headers: &Headers,
        body: &mut B,
    ) -> Result<Response<O::Body>> {
        if let Some(mount) = params.mount {
            let digest = Digest::parse(mount)?;
            let from = params.from.map(RepositoryName::parse).transpose()?;
            let source = async {
                match &from {
                    Some(from) => self.blob_link(from, &digest).await,
                    None => self.blob_by_digest(&digest).await,
                }
            };
            // A repository that holds the blob already is left as it is: its link is not
            // written again.
            let (source, held) = join(source, self.blob_link(name, &digest)).await;
            if held?.is_some() {
                return Ok(created(name, &digest));
            }
            if let Some(link) = source? {
                self.link_blob(name, &digest, &link).await?;
                if self.config.gc != GcMode::On || self.mount_source_holds(params.from, &digest, &link).await? {
                    return Ok(created(name, &digest));
                }
                // A garbage collection took the source meanwhile (see `gc`): no mount.
                self.unlink_blob(name, &digest, &link).await?;
            }
        }
        let id = UploadId::random()?;
        if let Some(digest) = params.digest.filter(|_| params.mount.is_none()) {
            let digest = Digest::parse(digest)?;
            check_declared_length(headers, self.config.max_chunk_size)?;
            // The whole blob: a Content-Range, if any, names it from 0.
            let announced = announced_length(headers, 0)?;
            if let Some(response) = self.put_whole(name, &id, &digest, headers, body).await? {
                return Ok(response);
            }
            let mut writer = Writer::new(&self.objects, id, digest.algorithm());
            if let Err(e) = writer.write(body, announced, self.config.max_chunk_size).await {
                writer.discard().await?;
                return Err(e);
            }
            return self.complete(name, &digest, writer).await;
        }
        let writer = Writer::new(&self.objects, id.clone(), SESSION_ALGORITHM);
        self.save_session(name, &writer, None).await?;
        Ok(self.session_response(202, name, &id, 0))
    }

    /// Whether the source a mount linked from (a repository's link, or without `from` the
    /// registry-wide index) still names the same bytes.
    async fn mount_source_holds(&self, from: Option<&str>, digest: &Digest, link: &BlobLink) -> Result<bool> {
        let key = match from {
            Some(from) => keys::blob_link(&RepositoryName::parse(from)?, digest),
            None => keys::blob_index(digest),
        };
        let source = self.objects.head(&key).await?.and_then(|m| BlobLink::from_metadata(&m.custom));
        Ok(source.is_some_and(|s| s.object == link.object))
    }

    pub(crate) async fn upload_status(&self, name: &RepositoryName, id: &UploadId) -> Result<Response<O::Body>> {
        let session = self.load_session(name, id).await?;
        Ok(self.session_response(204, name, id, session.writer.size))
    }

    /// PATCH: append the body. With Content-Range, the chunk must start where the upload
    /// stands and be as long as the body (see [`announced_length`]).
    pub(crate) async fn patch_upload<B: BodyReader<Raw = O::Upload>>(
        &self,
        name: &RepositoryName,
        id: &UploadId,
        headers: &Headers,
        body: &mut B,
    ) -> Result<Response<O::Body>> {
        check_declared_length(headers, self.config.max_chunk_size)?;
        let Session { mut writer, etag } = self.load_session(name, id).await?;
        let announced = announced_length(headers, writer.size)?;
        writer.append(body, announced, self.config.max_chunk_size).await?;
        self.save_session(name, &writer, Some(etag)).await?;
        Ok(self.session_response(202, name, id, writer.size))
    }

    /// PUT ?digest=: append the body if any, verify, and make the blob part of the repository.
    /// A last chunk is checked as a PATCH's is; refused there, the session stays as it was.
    pub(crate) async fn finish_upload<B: BodyReader<Raw = O::Upload>>(
        &self,
        name: &RepositoryName,
        id: &UploadId,
        digest: Option<&str>,
        headers: &Headers,
        body: &mut B,
    ) -> Result<Response<O::Body>> {
        let digest = parse_digest_param(digest)?;
        check_declared_length(headers, self.config.max_chunk_size)?;
        let Session { mut writer, .. } = self.load_session(name, id).await?;
        let announced = announced_length(headers, writer.size)?;
        // A session that received nothing yet, finished by a PUT carrying the whole blob (as
        // containerd and oci-client push), is a single-request upload.
        let result = if writer.size == 0
            && let Some(result) = self.put_whole(name, id, &digest, headers, body).await.transpose()
        {
            result
        } else {
            writer.append(body, announced, self.config.max_chunk_size).await?;
            self.complete(name, &digest, writer).await
        };
        // A body that broke off wrote nothing: the session stays as it was, to be continued.
        if matches!(&result, Err(e) if e.code == ErrorCode::BlobUploadInvalid) {
            return result;
        }
        // Finished or failed verification, the session is over (Distribution cancels the
        // upload on a digest mismatch too).
        self.objects.delete(&keys::upload_state(id)).await?;
        result
    }

    /// DELETE: cancel the session and drop what it wrote.
    pub(crate) async fn cancel_upload(&self, name: &RepositoryName, id: &UploadId) -> Result<Response<O::Body>> {
        let session = self.load_session(name, id).await?;
        session.writer.discard().await?;
        self.objects.delete(&keys::upload_state(id)).await?;
        Ok(Response::new(204).header("Content-Length", "0"))
    }

    async fn complete(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        writer: Writer<'_, Retrying<O>>,
    ) -> Result<Response<O::Body>> {
        let link = writer.finish(digest).await?;
        self.publish(name, digest, &link).await?;
        Ok(created(name, digest))
    }

    /// A whole blob in one request body of announced length, written by one R2 put that R2
    /// itself verifies against the digest: the bytes never pass through wasm. `Ok(None)` when
    /// the body cannot go that way (no length, empty, or larger than one put may be).
    async fn put_whole<B: BodyReader<Raw = O::Upload>>(
        &self,
        name: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
        headers: &Headers,
        body: &mut B,
    ) -> Result<Option<Response<O::Body>>> {
        let Some(length) = headers.content_length().filter(|&l| l > 0 && l <= MAX_SINGLE_PUT) else { return Ok(None) };
        let Some(raw) = body.take_raw() else { return Ok(None) };
        let key = keys::blob_by_upload(id);
        let options = PutOptions { content_type: Some(OCTET_STREAM.into()), ..Default::default() };
        if !self.objects.put_verified(&key, raw, length, digest, options).await? {
            return Err(digest_mismatch(digest, None));
        }
        self.publish(name, digest, &BlobLink { object: key, size: length }).await?;
        Ok(Some(created(name, digest)))
    }

    /// Makes a verified blob part of the repository and known registry-wide. The registry-wide
    /// entry is written only for a blob new to the registry: one that many repositories share (a
    /// base layer pushed by parallel jobs) would otherwise be rewritten by every upload, and R2
    /// takes one write per second per key.
    pub(crate) async fn publish(&self, name: &RepositoryName, digest: &Digest, link: &BlobLink) -> Result<()> {
        // The holder before the link and the index entry (see `keys`), side by side with the
        // index lookup.
        let (held, indexed) = join(self.hold(name, digest, link, Hold::Linked), self.blob_by_digest(digest)).await;
        held?;
        let index = async {
            if indexed?.is_none() {
                self.index_blob(digest, link).await?;
            }
            Ok(())
        };
        let (linked, indexed) = join(self.write_link(name, digest, link), index).await;
        linked.and(indexed)
    }

    fn session_response(&self, status: u16, name: &RepositoryName, id: &UploadId, size: u64) -> Response<O::Body> {
        Response::new(status)
            .header("Location", upload_url(name, id))
            .header("Range", range(size))
            .header("Docker-Upload-UUID", id.as_str())
            // spec: SHOULD tell the smallest chunk worth sending. wharf takes any size and
            // re-cuts it, but chunks below one part cost a session round trip per part.
            .header("OCI-Chunk-Min-Length", PART_SIZE.to_string())
            .header("Content-Length", "0")
    }

    async fn load_session(&self, name: &RepositoryName, id: &UploadId) -> Result<Session<'_, O>> {
        let (meta, bytes) = self.objects.get_bytes(&keys::upload_state(id)).await?.ok_or_else(|| upload_unknown(id))?;
        let newline = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| RegistryError::internal("upload state without header line"))?;
        let state = SessionState::from_json(&bytes[..newline])
            .ok_or_else(|| RegistryError::internal("upload state with a malformed header line"))?;
        if state.repository != name.as_str() {
            // A session belongs to the repository that started it.
            return Err(upload_unknown(id));
        }
        let hasher = state
            .hash
            .split(' ')
            .next()
            .and_then(Hasher::restore)
            .ok_or_else(|| RegistryError::internal("upload state with a bad hash state"))?;
        let writer = Writer {
            objects: &self.objects,
            id: id.clone(),
            hasher,
            size: state.size,
            buffer: bytes[newline + 1..].to_vec(),
            multipart: state.multipart,
            parts: state.parts,
            part_size: state.part_size,
            started_multipart: false,
        };
        Ok(Session { writer, etag: meta.etag })
    }

    /// Writes the session: only if it is still the version read (`etag`), so a concurrent
    /// request on the same session makes this one fail with 416 instead of losing data.
    async fn save_session(
        &self,
        name: &RepositoryName,
        writer: &Writer<'_, Retrying<O>>,
        etag: Option<String>,
    ) -> Result<()> {
        let state = SessionState {
            repository: name.as_str().to_owned(),
            size: writer.size,
            hash: writer.hasher.save(),
            multipart: writer.multipart.clone(),
            parts: writer.parts.clone(),
            part_size: writer.part_size,
        };
        let mut bytes = state.to_json();
        bytes.push(b'\n');
        bytes.extend_from_slice(&writer.buffer);
        // The multipart id also goes in the metadata, so that the cleanup can abort an
        // abandoned upload from a listing alone.
        let custom = writer.multipart.iter().map(|m| (MULTIPART_META.to_owned(), m.clone())).collect();
        let options = PutOptions { if_etag_matches: etag, custom, ..Default::default() };
        match self.objects.put(&keys::upload_state(&writer.id), bytes, options).await? {
            Some(_) => Ok(()),
            None => Err(RegistryError::new(ErrorCode::RangeInvalid)
                .with_message("the upload was changed by a concurrent request")),
        }
    }
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Aborts and removes the sessions not touched for `WHARF_UPLOAD_MAX_AGE_SECONDS` (run by
    /// the Worker's cron trigger). Returns how many it removed. A session's last activity is
    /// its state object's write time, so one listing finds them all.
    pub async fn clean_abandoned_uploads(&self, now_ms: u64) -> Result<usize> {
        let cutoff = now_ms.saturating_sub(self.config.upload_max_age_secs.saturating_mul(1000));
        let mut removed = 0;
        let mut listing = Listing::new(keys::UPLOADS_PREFIX);
        while let Some(object) = listing.next(&self.objects).await? {
            let Some(id) = keys::upload_of_state(&object.key).filter(|_| object.uploaded_ms < cutoff) else { continue };
            if let Some(upload) = object.custom.get(MULTIPART_META) {
                self.objects.abort_multipart(&keys::blob_by_upload(&id), upload).await?;
            }
            self.objects.delete(&object.key).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_needing_more_parts_than_r2_takes_is_413() {
        let objects = crate::storage::memory::MemoryObjects::new();
        let mut writer = Writer::new(&objects, UploadId::random().unwrap(), SESSION_ALGORITHM);
        writer.multipart = Some("m".into());
        writer.parts = (1..MAX_PARTS as u16).map(|number| Part { number, etag: String::new() }).collect();
        let (_, _, last) = futures_executor::block_on(writer.next_part()).unwrap();
        assert_eq!(usize::from(last), MAX_PARTS);
        writer.parts.push(Part { number: last, etag: String::new() });
        let e = futures_executor::block_on(writer.next_part()).unwrap_err();
        assert_eq!((e.status(), e.code), (413, ErrorCode::PayloadTooLarge));
    }

    #[test]
    fn session_state_is_one_json_line_and_older_lines_still_read() {
        let state = SessionState {
            repository: "r".into(),
            size: 7,
            hash: "sha256:00".into(),
            multipart: None,
            parts: vec![Part { number: 1, etag: "e1".into() }],
            part_size: 6 * 1024 * 1024,
        };
        let line = String::from_utf8(state.to_json()).unwrap();
        assert_eq!(
            line,
            r#"{"repository":"r","size":7,"hash":"sha256:00","multipart":null,"parts":[{"number":1,"etag":"e1"}],"part_size":6291456}"#
        );
        let read = SessionState::from_json(line.as_bytes()).unwrap();
        assert_eq!((read.parts, read.part_size), (state.parts, state.part_size));
        // Before the part size was chosen per upload.
        let old = SessionState::from_json(br#"{"repository":"r","size":0,"hash":"h","parts":[],"multipart":"m"}"#);
        assert_eq!(old.map(|s| (s.part_size, s.multipart)), Some((PART_SIZE, Some("m".to_owned()))));
        assert!(SessionState::from_json(br#"{"repository":"r","size":0,"hash":"h"}"#).is_none());
        assert!(
            SessionState::from_json(br#"{"repository":"r","size":0,"hash":"h","parts":[{"number":70000,"etag":"e"}]}"#)
                .is_none()
        );
    }

    #[test]
    fn content_ranges_are_inclusive_pairs() {
        assert_eq!(content_range("0-99"), Ok((0, 99)));
        assert_eq!(content_range("bytes 100-199"), Ok((100, 199)));
        assert_eq!(content_range("bytes=5-5"), Ok((5, 5)));
        assert!(content_range("5-4").is_err());
        assert!(content_range("x-1").is_err());
        assert!(content_range("10").is_err());
        assert!(content_range("0-18446744073709551615").is_err());
    }

    #[test]
    fn the_part_size_follows_equal_chunks() {
        const MIB: u64 = 1024 * 1024;
        let part = |mib: u64| part_size_for(Some(mib * MIB)) as u64;
        assert_eq!(part_size_for(None), PART_SIZE);
        assert_eq!(part(0), PART_SIZE as u64);
        assert_eq!(part(1), PART_SIZE as u64); // too small for a part: re-cut
        assert_eq!(part(5), 5 * MIB);
        assert_eq!(part(8), 8 * MIB);
        assert_eq!(part(16), 8 * MIB); // two parts per chunk
        assert_eq!(part(21), 7 * MIB); // three
        assert_eq!(part(100), 50 * MIB / 8); // 6.25 MiB: sixteen
        assert_eq!(part_size_for(Some(17 * MIB + 11)), PART_SIZE); // a prime: no exact fraction
        assert_eq!(part_size_for(Some(u64::MAX)), PART_SIZE);
    }

    #[test]
    fn upload_ranges_start_at_zero_and_are_inclusive() {
        assert_eq!(range(0), "0-0");
        assert_eq!(range(1), "0-0");
        assert_eq!(range(100), "0-99");
    }
}
