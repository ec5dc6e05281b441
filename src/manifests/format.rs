//! Manifest formats: the four media types, Accept negotiation and the checks a pushed body
//! must pass before it is stored (Distribution's UnmarshalManifest and the per-schema
//! unmarshal functions). Bytes first: the pushed bytes are stored as they are; parsing only
//! validates and collects the digests the manifest refers to.

use crate::error::{ErrorCode, RegistryError};
use crate::json::Json;
use crate::names::Digest;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    OciManifest,
    OciIndex,
    DockerManifest,
    DockerManifestList,
}

impl MediaType {
    pub const ALL: [MediaType; 4] =
        [MediaType::OciManifest, MediaType::OciIndex, MediaType::DockerManifest, MediaType::DockerManifestList];

    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::OciManifest => "application/vnd.oci.image.manifest.v1+json",
            MediaType::OciIndex => "application/vnd.oci.image.index.v1+json",
            MediaType::DockerManifest => "application/vnd.docker.distribution.manifest.v2+json",
            MediaType::DockerManifestList => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }

    /// Parses a media type, ignoring parameters and surrounding space (`mime.ParseMediaType`).
    pub fn parse(value: &str) -> Option<Self> {
        let essence = value.split(';').next().unwrap_or("").trim();
        MediaType::ALL.into_iter().find(|m| m.as_str().eq_ignore_ascii_case(essence))
    }

    pub fn is_list(self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }
}

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

/// The platform of an index entry (or of an image config): absent fields read as empty.
#[derive(Debug, Clone, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

impl Platform {
    /// `None` unless an object whose `architecture` and `os`, when present, are strings.
    pub fn from_json(v: &Json) -> Option<Self> {
        v.as_object()?;
        let text = |name| match v.present(name) {
            None => Some(String::new()),
            Some(s) => s.as_str().map(str::to_owned),
        };
        Some(Platform { architecture: text("architecture")?, os: text("os")? })
    }
}

/// A member that may be absent or null; one that is present must read as `what`.
fn optional<'a, T>(
    v: &'a Json,
    name: &str,
    what: &str,
    read: impl Fn(&'a Json) -> Option<T>,
) -> Result<Option<T>, String> {
    match v.present(name) {
        None => Ok(None),
        Some(x) => read(x).map(Some).ok_or_else(|| format!("`{name}` must be {what}")),
    }
}

/// A string member's value, owned.
fn string(v: &Json) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn required<'a, T>(v: &'a Json, name: &str, what: &str, read: impl Fn(&'a Json) -> Option<T>) -> Result<T, String> {
    optional(v, name, what, read)?.ok_or_else(|| format!("missing field `{name}`"))
}

/// A content descriptor as it appears in a manifest.
#[derive(Debug, Clone)]
pub struct RawDescriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub platform: Option<Platform>,
}

impl RawDescriptor {
    fn read(v: &Json) -> Result<Self, String> {
        v.as_object().ok_or("a descriptor must be an object")?;
        Ok(RawDescriptor {
            media_type: required(v, "mediaType", "a string", string)?,
            digest: required(v, "digest", "a string", string)?,
            size: required(v, "size", "a non-negative integer", Json::as_u64)?,
            platform: optional(v, "platform", "an object of strings", Platform::from_json)?,
        })
    }

    fn list(v: &Json, name: &str) -> Result<Option<Vec<Self>>, String> {
        let Some(items) = optional(v, name, "an array", Json::as_array)? else { return Ok(None) };
        items.iter().map(Self::read).collect::<Result<_, _>>().map(Some).map_err(|e| format!("{name}: {e}"))
    }
}

/// The union of the fields of the four formats that wharf looks at; the rest of the body is
/// stored but not interpreted.
#[derive(Debug)]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    artifact_type: Option<String>,
    annotations: Option<Vec<(String, String)>>,
}

impl RawManifest {
    fn read(body: &[u8]) -> Result<Self, String> {
        let v = Json::parse(body)?;
        v.as_object().ok_or("a manifest must be a JSON object")?;
        let descriptor = |name: &str| match v.present(name) {
            None => Ok(None),
            Some(d) => RawDescriptor::read(d).map(Some).map_err(|e| format!("{name}: {e}")),
        };
        Ok(RawManifest {
            schema_version: optional(&v, "schemaVersion", "an integer", Json::as_i64)?,
            media_type: optional(&v, "mediaType", "a string", string)?,
            config: descriptor("config")?,
            layers: RawDescriptor::list(&v, "layers")?,
            manifests: RawDescriptor::list(&v, "manifests")?,
            subject: descriptor("subject")?,
            artifact_type: optional(&v, "artifactType", "a string", string)?,
            annotations: optional(&v, "annotations", "an object of strings", Json::to_strings)?,
        })
    }
}

/// A descriptor whose digest has been checked.
#[derive(Debug, Clone)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
}

/// A pushed manifest that passed the format checks.
#[derive(Debug)]
pub struct Manifest {
    pub media_type: MediaType,
    /// The config descriptor (image manifests only).
    pub config: Option<Descriptor>,
    /// Layers (image manifests) or child manifests (lists and indexes).
    pub references: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    /// In document order.
    pub annotations: Option<Vec<(String, String)>>,
}

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

fn descriptor(raw: RawDescriptor) -> Result<Descriptor, RegistryError> {
    let digest = Digest::parse(&raw.digest).map_err(|e| e.with_message("manifest refers to an invalid digest"))?;
    Ok(Descriptor { media_type: raw.media_type, digest, size: raw.size, platform: raw.platform })
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
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, RegistryError> {
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
        Ok(Manifest {
            media_type,
            config: config.map(descriptor).transpose()?,
            references: references.into_iter().map(descriptor).collect::<Result<_, _>>()?,
            subject: raw.subject.map(descriptor).transpose()?,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
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

/// The `subject` of stored manifest bytes, if any (read leniently: they passed `parse`).
pub fn subject_of(body: &[u8]) -> Option<Digest> {
    Digest::parse(Json::parse(body).ok()?.present("subject")?["digest"].as_str()?).ok()
}

/// In a Docker manifest list, the child for the default platform (linux/amd64): what
/// Distribution serves by tag to clients that do not accept lists.
pub fn default_platform_child(list_body: &[u8]) -> Option<Digest> {
    let raw = RawManifest::read(list_body).ok()?;
    raw.manifests?
        .into_iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.architecture == "amd64" && p.os == "linux"))
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
