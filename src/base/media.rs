//! The four manifest media types wharf serves.

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
