//! What a request records for the notifications sent after it (see `ops::notify`).

use crate::base::media::MediaType;
use crate::base::names::{Digest, RepositoryName};
use crate::base::router::manifest_url;
use serde::Serialize;

/// What an event is about (Distribution's `Event.Target`, its field names); absent fields are
/// left out.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    pub repository: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Target {
    pub fn new(repository: &RepositoryName) -> Self {
        Self { repository: repository.to_string(), ..Self::default() }
    }

    /// A manifest pushed or pulled.
    pub fn manifest(
        name: &RepositoryName,
        digest: &Digest,
        media_type: MediaType,
        size: u64,
        tag: Option<&str>,
    ) -> Self {
        Self {
            media_type: Some(media_type.as_str().to_owned()),
            size: Some(size),
            length: Some(size),
            digest: Some(digest.to_string()),
            url: Some(manifest_url(name, digest)),
            tag: tag.map(str::to_owned),
            ..Self::new(name)
        }
    }
}
