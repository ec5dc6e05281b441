//! The pull-through cache's settings (`WHARF_UPSTREAM*`; see `oci::proxy`).

use crate::base::names::RepositoryName;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Where the upstream is and how to talk to it (`WHARF_UPSTREAM*`, see docs/pull-through-cache.md).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// `scheme://host[:port]`, without a trailing slash.
    pub url: String,
    /// `WHARF_UPSTREAM_USERNAME` / `WHARF_UPSTREAM_PASSWORD` (secrets).
    pub credentials: Option<(String, String)>,
    /// `WHARF_UPSTREAM_TAG_TTL_SECONDS`: how long a tag is served without asking upstream.
    pub tag_ttl_secs: u64,
}

/// The default tag TTL: five minutes, so that a moved tag shows within minutes while a busy tag
/// costs the upstream one HEAD per five minutes per location.
pub const DEFAULT_TAG_TTL_SECS: u64 = 300;

/// Hosts of Docker Hub's registry, where official images live under `library/`.
const DOCKER_HUB: [&str; 4] = ["registry-1.docker.io", "index.docker.io", "docker.io", "registry.hub.docker.com"];

impl UpstreamConfig {
    /// Reads `WHARF_UPSTREAM*`; `None` when no upstream is configured.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> std::result::Result<Option<Self>, String> {
        let Some(url) = var("WHARF_UPSTREAM").map(|u| u.trim().trim_end_matches('/').to_owned()) else {
            return Ok(None);
        };
        if url.is_empty() {
            return Ok(None);
        }
        let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        if host.is_none_or(|h| h.is_empty() || h.contains(['/', '?', '#', '@'])) {
            return Err(format!("WHARF_UPSTREAM: expected https://host[:port], got \"{url}\""));
        }
        let credentials = match (var("WHARF_UPSTREAM_USERNAME"), var("WHARF_UPSTREAM_PASSWORD")) {
            (None, None) => None,
            (Some(user), Some(password)) if !user.is_empty() => Some((user, password)),
            _ => return Err("WHARF_UPSTREAM_USERNAME and WHARF_UPSTREAM_PASSWORD: set both or neither".into()),
        };
        let tag_ttl_secs = match var("WHARF_UPSTREAM_TAG_TTL_SECONDS").as_deref().map(str::trim) {
            None | Some("") => DEFAULT_TAG_TTL_SECS,
            Some(v) => {
                v.parse().map_err(|_| format!("WHARF_UPSTREAM_TAG_TTL_SECONDS: expected seconds, got \"{v}\""))?
            }
        };
        Ok(Some(Self { url, credentials, tag_ttl_secs }))
    }

    /// The repository's name upstream. Docker Hub keeps official images under `library/`;
    /// docker adds it to one-word names itself, other clients pulling `nginx` through the cache
    /// do not.
    pub fn upstream_name(&self, name: &RepositoryName) -> String {
        let host = self.url.split("://").nth(1).unwrap_or_default();
        if DOCKER_HUB.contains(&host) && !name.as_str().contains('/') {
            format!("library/{name}")
        } else {
            name.as_str().to_owned()
        }
    }

    /// The `Authorization` of the configured credentials, if any.
    pub(crate) fn basic(&self) -> Option<String> {
        let (user, password) = self.credentials.as_ref()?;
        Some(format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> std::result::Result<Option<UpstreamConfig>, String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        UpstreamConfig::from_vars(&|name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn the_upstream_is_read_from_variables() {
        assert_eq!(config(&[]).unwrap(), None);
        let c = config(&[("WHARF_UPSTREAM", "https://registry-1.docker.io/")]).unwrap().unwrap();
        assert_eq!((c.url.as_str(), c.credentials, c.tag_ttl_secs), ("https://registry-1.docker.io", None, 300));
        let c = config(&[
            ("WHARF_UPSTREAM", "http://127.0.0.1:5000"),
            ("WHARF_UPSTREAM_USERNAME", "u"),
            ("WHARF_UPSTREAM_PASSWORD", "p"),
            ("WHARF_UPSTREAM_TAG_TTL_SECONDS", "0"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.credentials, Some(("u".into(), "p".into())));
        assert_eq!(c.basic().as_deref(), Some("Basic dTpw"));
        assert_eq!(c.tag_ttl_secs, 0);
    }

    #[test]
    fn bad_upstream_settings_are_refused() {
        for url in ["ftp://x", "registry.example", "https://", "https://host/path", "https://user@host"] {
            assert!(config(&[("WHARF_UPSTREAM", url)]).unwrap_err().contains("WHARF_UPSTREAM"), "{url}");
        }
        let half = config(&[("WHARF_UPSTREAM", "https://h"), ("WHARF_UPSTREAM_USERNAME", "u")]);
        assert!(half.unwrap_err().contains("both"));
        assert!(config(&[("WHARF_UPSTREAM", "https://h"), ("WHARF_UPSTREAM_TAG_TTL_SECONDS", "soon")]).is_err());
    }

    #[test]
    fn official_docker_hub_images_live_under_library() {
        let hub = config(&[("WHARF_UPSTREAM", "https://registry-1.docker.io")]).unwrap().unwrap();
        let name = |n: &str| RepositoryName::parse(n).unwrap();
        assert_eq!(hub.upstream_name(&name("nginx")), "library/nginx");
        assert_eq!(hub.upstream_name(&name("bitnami/nginx")), "bitnami/nginx");
        let other = config(&[("WHARF_UPSTREAM", "https://ghcr.io")]).unwrap().unwrap();
        assert_eq!(other.upstream_name(&name("nginx")), "nginx");
    }
}
