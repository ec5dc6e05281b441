//! Manifest formats: the four media types, Accept negotiation and the checks a pushed body
//! must pass before it is stored (Distribution's UnmarshalManifest and the per-schema
//! unmarshal functions). Bytes first: the pushed bytes are stored as they are; parsing only
//! validates and collects the digests the manifest refers to.

use crate::base::de::{self, Members, Object};
use crate::base::error::{ErrorCode, RegistryError};
pub use crate::base::media::MediaType;
use crate::base::names::Digest;
use serde::Deserialize;
use serde_json::json;

/// Which of the four types a client accepts: every Accept header, each split on commas,
/// parameters (q= included) ignored, as Distribution's GetManifest does.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Accepted {
    oci_manifest: bool,
    oci_index: bool,
    docker_manifest: bool,
    docker_list: bool,
}

impl Accepted {
    pub fn from_headers<'a>(values: impl Iterator<Item = &'a str>) -> Self {
        let mut a = Accepted::default();
        for m in values.flat_map(|v| v.split(',')).filter_map(MediaType::parse) {
            *a.slot(m) = true;
        }
        a
    }

    fn slot(&mut self, m: MediaType) -> &mut bool {
        match m {
            MediaType::OciManifest => &mut self.oci_manifest,
            MediaType::OciIndex => &mut self.oci_index,
            MediaType::DockerManifest => &mut self.docker_manifest,
            MediaType::DockerManifestList => &mut self.docker_list,
        }
    }

    pub fn accepts(mut self, m: MediaType) -> bool {
        *self.slot(m)
    }
}

/// The platform of an index entry (or of an image config): absent or null fields read as empty.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Platform {
    #[serde(default, deserialize_with = "de::nullable")]
    pub architecture: String,
    #[serde(default, deserialize_with = "de::nullable")]
    pub os: String,
}

impl Platform {
    /// The platform an image config names at its top level; `None` when the config is not a
    /// JSON object or its `architecture` or `os` is not a string.
    pub fn of_config(config: &[u8]) -> Option<Self> {
        de::from_object(config).ok()
    }
}

/// A content descriptor as it appears in a manifest. Its members, like the manifest's, are
/// plain fields of derived structs (no `flatten`), so that serde refuses any of them given twice.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    platform: Option<Object<Platform>>,
    /// Where a layer can be fetched from besides the registry (image-spec "urls").
    urls: Option<Vec<String>>,
}

/// The union of the fields of the four formats that wharf looks at; the rest of the body is
/// stored but not interpreted. A member that is null reads as absent.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Object<RawDescriptor>>,
    layers: Option<Vec<Object<RawDescriptor>>>,
    manifests: Option<Vec<Object<RawDescriptor>>>,
    subject: Option<Object<RawDescriptor>>,
    artifact_type: Option<String>,
    annotations: Option<Members<String>>,
}

impl RawManifest {
    fn read(body: &[u8]) -> Result<Self, serde_json::Error> {
        de::from_object(body)
    }
}

/// A descriptor whose digest has been checked.
#[derive(Debug, Clone)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
    /// The descriptor's `urls` (empty when absent).
    pub urls: Vec<String>,
}

/// A pushed manifest that passed the format checks.
#[derive(Debug)]
pub struct Manifest {
    pub media_type: MediaType,
    /// The config descriptor (image manifests only).
    pub config: Option<Descriptor>,
    /// Layers (image manifests) or child manifests (lists and indexes).
    pub references: Vec<Descriptor>,
    /// Config, layers or children whose digest is malformed, left out of `config` and
    /// `references`: (position among config-then-references, the digest as given). Only
    /// [`Manifest::read`] lets them through, so that a push can report them with everything
    /// else its references lack.
    pub malformed: Vec<(usize, String)>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    /// In document order.
    pub annotations: Option<Vec<(String, String)>>,
}

/// Most descriptors (config, layers or children) a pushed manifest may have. Images have at
/// most about 128 layers (overlay filesystems stack no more) and indexes a few dozen platforms;
/// each descriptor a push has to look up is a storage read.
pub const MAX_REFERENCES: usize = 256;

/// Deepest nesting of arrays and objects a manifest may have. Real ones nest four or five
/// levels; deeper documents are refused before parsing, so that nothing stored can choke the
/// parsers of clients that pull it (Go's stops at 10,000, others far sooner).
const MAX_NESTING: usize = 32;

/// How deeply a JSON text nests arrays and objects (brackets inside strings not counted).
/// Malformed text gets some number; the parser refuses it anyway.
fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn invalid(detail: serde_json::Value) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid).with_detail(detail)
}

/// A descriptor with its digest checked; a malformed digest is handed back as given.
fn descriptor(Object(raw): Object<RawDescriptor>) -> Result<Descriptor, String> {
    let Ok(digest) = Digest::parse(&raw.digest) else { return Err(raw.digest) };
    Ok(Descriptor {
        media_type: raw.media_type,
        digest,
        size: raw.size,
        platform: raw.platform.map(|p| p.0),
        urls: raw.urls.unwrap_or_default(),
    })
}

/// DIGEST_INVALID for a digest a manifest refers to.
pub fn invalid_reference(digest: &str) -> RegistryError {
    RegistryError::new(ErrorCode::DigestInvalid)
        .with_message("manifest refers to an invalid digest")
        .with_detail(json!({ "digest": digest }))
}

/// OCI layer media types whose URLs Distribution checks (ocimanifesthandler.go verifyManifest).
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Non-distributable layers (image-spec "layer.md"): their content may be fetched from `urls`.
const OCI_NONDISTRIBUTABLE: [&str; 3] = [
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];
/// Docker's foreign layer (schema2): always fetched from its `urls`.
const DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// Where a layer's content comes from, by its media type, as Distribution's verifyManifest of
/// each schema decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerSource {
    /// A blob of the repository; its `urls` are not looked at.
    Blob,
    /// A blob of the repository, and its `urls` must pass the URL rules (OCI `tar`, `tar+gzip`).
    BlobWithUrls,
    /// Non-distributable (OCI): with at least one URL, all passing the rules, it needs no blob;
    /// with none, it is a blob of the repository like any layer.
    UrlsOrBlob,
    /// Docker foreign layer: at least one URL, all passing the rules, and no blob needed.
    Urls,
}

impl LayerSource {
    pub fn of(manifest: MediaType, layer_media_type: &str) -> Self {
        match (manifest, layer_media_type) {
            (MediaType::OciManifest, OCI_LAYER | OCI_LAYER_GZIP) => LayerSource::BlobWithUrls,
            (MediaType::OciManifest, m) if OCI_NONDISTRIBUTABLE.contains(&m) => LayerSource::UrlsOrBlob,
            (MediaType::DockerManifest, DOCKER_FOREIGN) => LayerSource::Urls,
            _ => LayerSource::Blob,
        }
    }
}

impl Manifest {
    /// Checks a pushed body against the media type of its Content-Type header.
    ///
    /// - The header must name one of the four types (parameters are ignored).
    /// - The body must be JSON of that type's shape with `schemaVersion` 2.
    /// - Docker types must repeat their media type in the body; OCI types may omit it but
    ///   must not contradict it (image-spec: `mediaType` SHOULD be set and MUST match).
    /// - An OCI manifest must not carry `manifests`, an index neither `config` nor `layers`
    ///   (Distribution's ValidateUnambiguousManifestFormat).
    ///
    /// A config, layer or child whose digest is malformed is refused (DIGEST_INVALID).
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, RegistryError> {
        let manifest = Self::read(content_type, body)?;
        match manifest.malformed.first() {
            Some((_, digest)) => Err(invalid_reference(digest)),
            None => Ok(manifest),
        }
    }

    /// [`Manifest::parse`], except that configs, layers and children with a malformed digest
    /// are listed in `malformed` instead of refused.
    pub fn read(content_type: Option<&str>, body: &[u8]) -> Result<Self, RegistryError> {
        let ct = content_type.unwrap_or("");
        let media_type = MediaType::parse(ct)
            .ok_or_else(|| invalid(json!({ "reason": "unsupported manifest media type", "contentType": ct })))?;
        if nesting_depth(body) > MAX_NESTING {
            return Err(invalid(json!({ "reason": format!("JSON nested deeper than {MAX_NESTING} levels") })));
        }
        let raw = RawManifest::read(body).map_err(|e| {
            invalid(json!({ "reason": format!("manifest is not valid JSON of the expected shape: {e}") }))
        })?;
        if raw.schema_version != Some(2) {
            return Err(invalid(json!({ "reason": "schemaVersion must be 2", "schemaVersion": raw.schema_version })));
        }
        match (&raw.media_type, media_type) {
            (None, MediaType::OciManifest | MediaType::OciIndex) => {}
            (Some(m), expected) if m == expected.as_str() => {}
            (other, expected) => {
                return Err(invalid(json!({
                    "reason": "mediaType in the body does not match Content-Type",
                    "mediaType": other,
                    "contentType": expected.as_str(),
                })));
            }
        }
        let (config, references) = if media_type.is_list() {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(invalid(json!({ "reason": "an index or manifest list must not have config or layers" })));
            }
            let children = raw.manifests.ok_or_else(|| invalid(json!({ "reason": "manifests field missing" })))?;
            (None, children)
        } else {
            if raw.manifests.is_some() {
                return Err(invalid(json!({ "reason": "an image manifest must not have a manifests field" })));
            }
            let config = raw.config.ok_or_else(|| invalid(json!({ "reason": "config field missing" })))?;
            let layers = raw.layers.ok_or_else(|| invalid(json!({ "reason": "layers field missing" })))?;
            (Some(config), layers)
        };
        // Each reference is a storage lookup on push: a bound on them bounds what one request
        // may cost, and it is checked before any lookup.
        let count = usize::from(config.is_some()) + references.len();
        if count > MAX_REFERENCES {
            return Err(invalid(json!({
                "reason": format!("more than {MAX_REFERENCES} config, layer and child descriptors"),
                "descriptors": count,
            })));
        }
        let mut malformed = Vec::new();
        let mut checked = Vec::new();
        for (position, raw) in config.into_iter().chain(references).enumerate() {
            match descriptor(raw) {
                Ok(d) => checked.push(d),
                Err(digest) => malformed.push((position, digest)),
            }
        }
        let config_ok = !media_type.is_list() && malformed.first().is_none_or(|(p, _)| *p != 0);
        let mut checked = checked.into_iter();
        let config = if config_ok { checked.next() } else { None };
        let subject = raw.subject.map(descriptor).transpose().map_err(|d| invalid_reference(&d))?;
        Ok(Manifest {
            media_type,
            config,
            references: checked.collect(),
            malformed,
            subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations.map(|a| a.0),
        })
    }

    /// The blobs this manifest needs in the repository: config and layers. (Lists and indexes
    /// need manifests instead: see [`Manifest::child_manifests`].)
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        let layers = if self.media_type.is_list() { &[][..] } else { &self.references[..] };
        self.config.iter().chain(layers).map(|d| &d.digest)
    }

    pub fn child_manifests(&self) -> impl Iterator<Item = &Descriptor> {
        let children = if self.media_type.is_list() { &self.references[..] } else { &[][..] };
        children.iter()
    }

    /// The resource class of an image manifest, from its config media type, as Distribution's
    /// applyResourcePolicy decides it. `Ok(None)`: lists and indexes have no class.
    /// `Err`: an image manifest whose class is unknown (DENIED when a policy is configured).
    pub fn class(&self) -> Result<Option<&'static str>, String> {
        let Some(config) = &self.config else {
            return Ok(None);
        };
        match (self.media_type, config.media_type.as_str()) {
            (MediaType::DockerManifest, "application/vnd.docker.container.image.v1+json") => Ok(Some("image")),
            (MediaType::DockerManifest, "application/vnd.docker.plugin.v1+json") => Ok(Some("plugin")),
            (MediaType::OciManifest, "application/vnd.oci.image.config.v1+json") => Ok(Some("image")),
            (_, other) => Err(other.to_owned()),
        }
    }
}

/// The `subject` of stored manifest bytes, if any (they passed `parse`).
pub fn subject_of(body: &[u8]) -> Option<Digest> {
    Digest::parse(&RawManifest::read(body).ok()?.subject?.0.digest).ok()
}

/// The annotations of stored manifest bytes, in document order, if any.
pub fn annotations_of(body: &[u8]) -> Option<Vec<(String, String)>> {
    RawManifest::read(body).ok()?.annotations.map(|a| a.0)
}

/// In a Docker manifest list, the child for the default platform (linux/amd64): what
/// Distribution serves by tag to clients that do not accept lists.
pub fn default_platform_child(list_body: &[u8]) -> Option<Digest> {
    let raw = RawManifest::read(list_body).ok()?;
    raw.manifests?
        .into_iter()
        .map(|d| d.0)
        .find(|d| d.platform.as_ref().is_some_and(|p| p.0.architecture == "amd64" && p.0.os == "linux"))
        .and_then(|d| Digest::parse(&d.digest).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_measured_outside_strings() {
        assert_eq!(nesting_depth(b"{}"), 1);
        assert_eq!(nesting_depth(br#"{"a":[{"b":[]}],"c":{}}"#), 4);
        assert_eq!(nesting_depth(br#"{"a":"[[[{{{\"[["}"#), 1);
        assert_eq!(nesting_depth(br#"{"a":"\\","b":[[]]}"#), 3);
        assert_eq!(nesting_depth(b"]]]]"), 0);
    }

    fn d(n: u8) -> String {
        Digest::sha256_of(&[n]).to_string()
    }

    #[test]
    fn accept_headers_are_split_on_commas_and_parameters_ignored() {
        let a = Accepted::from_headers(
            [
                "application/vnd.oci.image.manifest.v1+json; q=0.5, text/plain",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            ]
            .into_iter(),
        );
        assert!(a.accepts(MediaType::OciManifest));
        assert!(a.accepts(MediaType::DockerManifestList));
        assert!(!a.accepts(MediaType::OciIndex));
        assert!(!a.accepts(MediaType::DockerManifest));
        assert_eq!(Accepted::from_headers(std::iter::empty()), Accepted::default());
    }

    #[test]
    fn content_type_parameters_are_stripped() {
        assert_eq!(
            MediaType::parse("application/vnd.oci.image.index.v1+json; charset=utf-8"),
            Some(MediaType::OciIndex)
        );
        assert_eq!(MediaType::parse("application/json"), None);
    }

    fn oci_manifest(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":1}}]{extra}}}"#,
            d(1),
            d(2)
        )
    }

    #[test]
    fn a_valid_oci_manifest_yields_its_blobs() {
        let m = Manifest::parse(Some(MediaType::OciManifest.as_str()), oci_manifest("").as_bytes()).unwrap();
        let blobs: Vec<String> = m.blobs().map(|d| d.to_string()).collect();
        assert_eq!(blobs, [d(1), d(2)]);
        assert_eq!(m.class(), Ok(Some("image")));
        assert_eq!(m.child_manifests().count(), 0);
    }

    #[test]
    fn malformed_manifests_are_manifest_invalid() {
        let oci = MediaType::OciManifest.as_str();
        let index = MediaType::OciIndex.as_str();
        let list = MediaType::DockerManifestList.as_str();
        let cases: Vec<(Option<&str>, String, ErrorCode)> = vec![
            (None, oci_manifest(""), ErrorCode::ManifestInvalid),
            (Some("application/json"), oci_manifest(""), ErrorCode::ManifestInvalid),
            (Some(oci), "not json".into(), ErrorCode::ManifestInvalid),
            (Some(oci), "[]".into(), ErrorCode::ManifestInvalid),
            (
                Some(oci),
                oci_manifest("").replace("\"schemaVersion\":2", "\"schemaVersion\":1"),
                ErrorCode::ManifestInvalid,
            ),
            (Some(index), oci_manifest(""), ErrorCode::ManifestInvalid),
            (Some(oci), oci_manifest(r#","manifests":[]"#), ErrorCode::ManifestInvalid),
            (Some(list), r#"{"schemaVersion":2,"manifests":[]}"#.into(), ErrorCode::ManifestInvalid),
            (Some(oci), oci_manifest("").replace(&d(2), "sha256:nothex"), ErrorCode::DigestInvalid),
            (Some(oci), oci_manifest("").replace("\"size\":1}]", "\"size\":-1}]"), ErrorCode::ManifestInvalid),
        ];
        for (ct, body, code) in cases {
            assert_eq!(Manifest::parse(ct, body.as_bytes()).unwrap_err().code, code, "{ct:?} {body}");
        }
    }

    fn parse_oci(body: &str) -> Result<Manifest, RegistryError> {
        Manifest::parse(Some(MediaType::OciManifest.as_str()), body.as_bytes())
    }

    fn index_with(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":3}}]{extra}}}"#,
            MediaType::OciManifest.as_str(),
            d(3)
        )
    }

    fn subject(n: u8) -> String {
        format!(r#","subject":{{"mediaType":"{}","digest":"{}","size":1}}"#, MediaType::OciManifest.as_str(), d(n))
    }

    /// Two readers of a manifest with a repeated member could each see another one (Go's
    /// decoder keeps the last, others the first): every member wharf acts on is refused twice.
    #[test]
    fn a_member_given_twice_is_manifest_invalid() {
        let layers = format!(r#","layers":[{{"mediaType":"x","digest":"{}","size":1}}]"#, d(9));
        let config = format!(r#","config":{{"mediaType":"x","digest":"{}","size":1}}"#, d(9));
        let index = MediaType::OciIndex.as_str();
        let twice = [
            (oci_manifest(&layers), "layers"),
            (oci_manifest(&config), "config"),
            (oci_manifest(&format!("{}{}", subject(7), subject(8))), "subject"),
            (oci_manifest(r#","mediaType":"application/vnd.oci.image.manifest.v1+json""#), "mediaType"),
            (oci_manifest(r#","schemaVersion":2"#), "schemaVersion"),
            (oci_manifest(r#","artifactType":"a","artifactType":"b""#), "artifactType"),
            (oci_manifest(r#","annotations":{},"annotations":{}"#), "annotations"),
            (oci_manifest("").replacen(r#""size":1}"#, &format!(r#""size":1,"digest":"{}"}}"#, d(9)), 1), "digest"),
            (oci_manifest("").replacen(r#""size":1}"#, r#""size":1,"size":2}"#, 1), "size"),
            (oci_manifest("").replacen(r#""size":1}"#, r#""size":1,"mediaType":"x"}"#, 1), "mediaType"),
            (oci_manifest("").replacen(r#""size":1}"#, r#""size":1,"urls":["https://a/"],"urls":[]}"#, 2), "urls"),
        ];
        for (body, member) in twice {
            let e = parse_oci(&body).unwrap_err();
            assert_eq!((e.code, e.status()), (ErrorCode::ManifestInvalid, 400), "{body}");
            let reason = e.detail.as_ref().unwrap()["reason"].as_str().unwrap().to_owned();
            assert!(reason.contains(&format!("duplicate field `{member}`")), "{reason}");
        }
        let manifests = format!(r#","manifests":[{{"mediaType":"x","digest":"{}","size":1}}]"#, d(9));
        for body in [index_with(&manifests), index_with(&format!("{}{}", subject(7), subject(8)))] {
            let e = Manifest::parse(Some(index), body.as_bytes()).unwrap_err();
            assert_eq!((e.code, e.status()), (ErrorCode::ManifestInvalid, 400), "{body}");
        }
        let platforms = index_with("")
            .replace(r#""size":3}"#, r#""size":3,"platform":{"architecture":"amd64","os":"linux","os":"windows"}}"#);
        assert_eq!(Manifest::parse(Some(index), platforms.as_bytes()).unwrap_err().code, ErrorCode::ManifestInvalid);
        // Annotations are reported by the referrers API: a key twice is refused too.
        let e = parse_oci(&oci_manifest(r#","annotations":{"a":"1","b":"2","a":"3"}"#)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ManifestInvalid);
    }

    #[test]
    fn members_wharf_does_not_read_may_be_anything() {
        let m = parse_oci(&oci_manifest(r#","x-extra":[1,{"y":null}],"x-extra":"again","x":1e400"#)).unwrap();
        assert_eq!(m.blobs().count(), 2);
        // Not UTF-8, even where nothing is read.
        let mut bytes = oci_manifest(r#","x":"?""#).into_bytes();
        let at = bytes.iter().rposition(|&b| b == b'?').unwrap();
        bytes[at] = 0xff;
        let e = Manifest::parse(Some(MediaType::OciManifest.as_str()), &bytes).unwrap_err();
        assert_eq!(e.code, ErrorCode::ManifestInvalid);
    }

    #[test]
    fn null_members_read_as_absent() {
        let m = parse_oci(&oci_manifest(r#","subject":null,"annotations":null,"artifactType":null"#)).unwrap();
        assert!(m.subject.is_none() && m.annotations.is_none() && m.artifact_type.is_none());
        assert_eq!(
            parse_oci(
                &oci_manifest("")
                    .replace(r#""mediaType":"application/vnd.oci.image.manifest.v1+json","#, r#""mediaType":null,"#)
            )
            .unwrap()
            .media_type,
            MediaType::OciManifest
        );
        let e = parse_oci(&oci_manifest("").replace(r#""layers":["#, r#""layers":null,"x":["#)).unwrap_err();
        assert_eq!(e.detail.unwrap()["reason"], "layers field missing");
        let body = index_with("").replace(r#""size":3}"#, r#""size":3,"platform":{"architecture":null,"os":"linux"}}"#);
        let m = Manifest::parse(Some(MediaType::OciIndex.as_str()), body.as_bytes()).unwrap();
        let p = m.child_manifests().next().unwrap().platform.clone().unwrap();
        assert_eq!((p.architecture.as_str(), p.os.as_str()), ("", "linux"));
        // A descriptor's own members are required: null is not a value for them.
        let e = parse_oci(&oci_manifest("").replacen(r#""size":1}"#, r#""size":null}"#, 1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ManifestInvalid);
    }

    #[test]
    fn descriptors_and_manifests_are_objects_not_arrays() {
        let array_config = oci_manifest("").replacen(
            &format!(r#"{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":1}}"#, d(1)),
            &format!(r#"["application/vnd.oci.image.config.v1+json","{}",1]"#, d(1)),
            1,
        );
        assert_ne!(array_config, oci_manifest(""));
        assert_eq!(parse_oci(&array_config).unwrap_err().code, ErrorCode::ManifestInvalid);
        let array_layer = oci_manifest("").replacen(
            &format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":1}}"#, d(2)),
            &format!(r#"["application/vnd.oci.image.layer.v1.tar+gzip","{}",1]"#, d(2)),
            1,
        );
        assert_ne!(array_layer, oci_manifest(""));
        assert_eq!(parse_oci(&array_layer).unwrap_err().code, ErrorCode::ManifestInvalid);
        let whole = format!(
            r#"[2,"application/vnd.oci.image.manifest.v1+json",{{"mediaType":"x","digest":"{}","size":1}},[]]"#,
            d(1)
        );
        assert_eq!(parse_oci(&whole).unwrap_err().code, ErrorCode::ManifestInvalid);
        let platform = index_with("").replace(r#""size":3}"#, r#""size":3,"platform":["amd64","linux"]}"#);
        let e = Manifest::parse(Some(MediaType::OciIndex.as_str()), platform.as_bytes()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ManifestInvalid);
    }

    #[test]
    fn mistyped_members_are_manifest_invalid() {
        for (from, to) in [
            (r#""schemaVersion":2"#, r#""schemaVersion":2.0"#),
            (r#""schemaVersion":2"#, r#""schemaVersion":"2""#),
            (r#""size":1}"#, r#""size":1.5}"#),
            (r#""size":1}"#, r#""size":1e2}"#),
            (r#""size":1}"#, r#""size":-0}"#),
            (r#""size":1}"#, r#""size":18446744073709551616}"#),
            (r#""size":1}"#, r#""size":"1"}"#),
            (r#""layers":["#, r#""annotations":{"a":1},"layers":["#),
            (r#""layers":["#, r#""artifactType":7,"layers":["#),
            (r#""layers":["#, r#""subject":"sha256:x","layers":["#),
            (r#""size":1}]"#, r#""size":1,"urls":"https://a/"}]"#),
            (r#""size":1}]"#, r#""size":1,"urls":[7]}]"#),
        ] {
            let body = oci_manifest("").replacen(from, to, 1);
            assert_ne!(body, oci_manifest(""));
            assert_eq!(parse_oci(&body).unwrap_err().code, ErrorCode::ManifestInvalid, "{body}");
        }
    }

    #[test]
    fn annotations_keep_their_order() {
        let m = parse_oci(&oci_manifest(r#","annotations":{"z":"1","a":"2"}"#)).unwrap();
        let expected = [("z".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())];
        assert_eq!(m.annotations.as_deref(), Some(&expected[..]));
        assert_eq!(annotations_of(oci_manifest(r#","annotations":{"z":"1","a":"2"}"#).as_bytes()).unwrap(), expected);
        assert_eq!(subject_of(oci_manifest(&subject(7)).as_bytes()).unwrap().to_string(), d(7));
        assert!(subject_of(oci_manifest("").as_bytes()).is_none());
    }

    #[test]
    fn an_oci_index_may_omit_its_media_type_but_a_docker_list_may_not() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":3}}]}}"#,
            MediaType::OciManifest.as_str(),
            d(3)
        );
        let m = Manifest::parse(Some(MediaType::OciIndex.as_str()), body.as_bytes()).unwrap();
        assert_eq!(m.child_manifests().count(), 1);
        assert_eq!(m.blobs().count(), 0);
        assert!(Manifest::parse(Some(MediaType::DockerManifestList.as_str()), body.as_bytes()).is_err());
    }

    #[test]
    fn classes_follow_the_config_media_type() {
        let plugin = oci_manifest("")
            .replace("application/vnd.oci.image.manifest.v1+json", MediaType::DockerManifest.as_str())
            .replace("application/vnd.oci.image.config.v1+json", "application/vnd.docker.plugin.v1+json");
        let m = Manifest::parse(Some(MediaType::DockerManifest.as_str()), plugin.as_bytes()).unwrap();
        assert_eq!(m.class(), Ok(Some("plugin")));
        let artifact =
            oci_manifest("").replace("application/vnd.oci.image.config.v1+json", "application/vnd.example+json");
        let m = Manifest::parse(Some(MediaType::OciManifest.as_str()), artifact.as_bytes()).unwrap();
        assert_eq!(m.class(), Err("application/vnd.example+json".to_owned()));
    }

    #[test]
    fn the_default_platform_child_is_linux_amd64() {
        let body = format!(
            r#"{{"manifests":[{{"mediaType":"x","digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},{{"mediaType":"x","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d(4),
            d(5)
        );
        assert_eq!(default_platform_child(body.as_bytes()).unwrap().to_string(), d(5));
        assert!(default_platform_child(br#"{"manifests":[]}"#).is_none());
    }
}
