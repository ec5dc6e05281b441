//! Configuration from the Worker's environment variables (wrangler.toml `[vars]`). Every
//! variable, its default and meaning is listed in README's "Configuration" section.

pub mod manifests;
pub mod notify;
pub mod retention;
pub mod tags;
pub mod upstream;

use manifests::ManifestUrls;

/// Largest manifest accepted (distribution-spec: registries SHOULD accept at least 4 MiB and
/// reject larger ones with 413).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Access control; `None` (no `WHARF_RULES`) leaves the registry open to anyone.
    pub auth: Option<crate::auth::AuthConfig>,
    /// `WHARF_READ_ONLY`: refuse every write with 405 UNSUPPORTED. Default false.
    pub read_only: bool,
    /// `WHARF_DELETE_ENABLED`: allow DELETE of manifests, tags and blobs. Default false, as in
    /// Distribution (`storage.delete.enabled`).
    pub delete_enabled: bool,
    /// `WHARF_ALLOWED_CLASSES`: comma-separated manifest classes (`image`, `plugin`) accepted on
    /// push. Empty (the default) disables the policy, as in Distribution.
    pub allowed_classes: Vec<String>,
    /// `WHARF_SELFTEST`: expose the self-test endpoints (`POST /_wharf/selftest` runs the
    /// storage contract suite against the real bindings). For the end-to-end tests only, and
    /// only in a build with the `selftest` feature. Default false.
    pub selftest: bool,
    /// `WHARF_MAX_CHUNK_SIZE`: most bytes one upload request (POST, PATCH or PUT) may carry;
    /// more is 413. Default 512 MiB, above every Cloudflare plan's own body limit. At least one
    /// multipart part (5 MiB), which is the chunk size wharf advertises.
    pub max_chunk_size: u64,
    /// `WHARF_UPLOAD_MAX_AGE_SECONDS`: an upload session idle this long is aborted by the
    /// scheduled cleanup. Default one day.
    pub upload_max_age_secs: u64,
    /// `WHARF_MAX_PAGE_SIZE`: the largest `n` of tags/list and _catalog (larger is 400
    /// PAGINATION_NUMBER_INVALID), their page size when `n` is absent, and the page size of
    /// referrers. 1 to 1000 (one KV or R2 listing). Default 1000.
    pub max_page: usize,
    /// `WHARF_TAG_MAX_AGE_SECONDS`: how long caches may keep a manifest pulled by tag without
    /// revalidating it. Default 0: `no-cache`, revalidated every time (a 304 when unchanged).
    pub tag_max_age_secs: u64,
    /// `WHARF_TAG_MEMO_SECONDS`: how long an isolate keeps what a tag points at in memory
    /// (see `memo`). Default 2; 0 turns it off.
    pub tag_memo_secs: u64,
    /// `WHARF_RETENTION`: which tags garbage collection untags (see `retention`). Default none.
    pub retention: retention::Retention,
    /// `WHARF_CORS_ORIGINS`: the browser origins whose pages may call the registry (see
    /// `cors`). Default none.
    pub cors_origins: crate::base::cors::CorsOrigins,
    /// `WHARF_UPSTREAM` and friends: pull-through cache mode (see `proxy`). Default off.
    pub upstream: Option<upstream::UpstreamConfig>,
    /// `WHARF_GC`: what the cron trigger's garbage collection does (see `gc`). Default off.
    pub gc: GcMode,
    /// `WHARF_GC_UNTAGGED`: garbage collection also removes manifests no tag reaches. Default
    /// false.
    pub gc_untagged: bool,
    /// `WHARF_GC_GRACE_SECONDS`: how old an unreferenced object must be before garbage
    /// collection removes it; covers a push between its blobs and its manifest. Default one day.
    pub gc_grace_secs: u64,
    /// `WHARF_ADMIN_TOKEN` (a secret, at least 32 bytes): the bearer token of the admin
    /// endpoints (`POST /_wharf/gc`). Without it they do not exist.
    pub admin_token: Option<String>,
    /// `WHARF_IMMUTABLE_TAGS`: tag patterns that cannot be moved or deleted once set.
    pub immutable_tags: tags::ImmutableTags,
    /// `WHARF_LOG_LEVEL`: `off`, `error` (the default), `info` (a line per request) or `debug`.
    pub log_level: crate::base::log::Level,
    /// `WHARF_NOTIFY_URLS` and friends: where push, delete and pull events go (see `notify`).
    pub notify: Option<notify::NotifyConfig>,
    /// `WHARF_UI`: serve the web UI under `/ui/` (see `ui`). Default false.
    pub ui: bool,
    /// `WHARF_MANIFEST_URLS_ALLOW` and `WHARF_MANIFEST_URLS_DENY`: regular expressions the
    /// `urls` of pushed layers must match, and must not match (Distribution's
    /// `validation.manifests.urls.allow` and `.deny`). Default: neither.
    pub manifest_urls: ManifestUrls,
}

/// `WHARF_GC`: whether garbage collection may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GcMode {
    /// No scheduled collection; the admin endpoint only reports (dry runs).
    #[default]
    Off,
    /// The cron trigger logs what a collection would remove; nothing is deleted.
    DryRun,
    /// The cron trigger collects, and so may the admin endpoint. Pushes and mounts then check
    /// once more after writing (see `gc`).
    On,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            auth: None,
            read_only: false,
            delete_enabled: false,
            allowed_classes: Vec::new(),
            selftest: false,
            max_chunk_size: 512 * 1024 * 1024,
            upload_max_age_secs: 24 * 60 * 60,
            max_page: 1000,
            tag_max_age_secs: 0,
            tag_memo_secs: 2,
            upstream: None,
            cors_origins: Default::default(),
            retention: Default::default(),
            gc: GcMode::Off,
            gc_untagged: false,
            gc_grace_secs: 24 * 60 * 60,
            admin_token: None,
            immutable_tags: tags::ImmutableTags::default(),
            log_level: crate::base::log::Level::Error,
            notify: None,
            ui: false,
            manifest_urls: ManifestUrls::default(),
        }
    }
}

impl Config {
    /// Reads the configuration through `var` (absent variables take their defaults). An
    /// unreadable value is an error naming the variable: better to refuse to serve than to
    /// serve with a setting the operator did not mean.
    /// `var` is a trait object: each of the many lookups is then a call, not an inlined copy of
    /// the Worker's environment access (a few KiB of wasm).
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let flag = |name: &str, default: bool| -> Result<bool, String> {
            match var(name).as_deref().map(str::trim) {
                None | Some("") => Ok(default),
                Some("true" | "1" | "yes") => Ok(true),
                Some("false" | "0" | "no") => Ok(false),
                Some(other) => Err(format!("{name}: expected true or false, got \"{other}\"")),
            }
        };
        let allowed_classes: Vec<String> = var("WHARF_ALLOWED_CLASSES")
            .unwrap_or_default()
            .split(',')
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        if let Some(bad) = allowed_classes.iter().find(|c| *c != "image" && *c != "plugin") {
            return Err(format!("WHARF_ALLOWED_CLASSES: unknown class \"{bad}\" (known: image, plugin)"));
        }
        let defaults = Config::default();
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match var(name).as_deref().map(str::trim) {
                None | Some("") => Ok(default),
                Some(v) => v.parse().map_err(|_| format!("{name}: expected a whole number, got \"{v}\"")),
            }
        };
        let max_chunk_size = number("WHARF_MAX_CHUNK_SIZE", defaults.max_chunk_size)?;
        if max_chunk_size < crate::storage::MIN_PART_SIZE as u64 {
            return Err(format!(
                "WHARF_MAX_CHUNK_SIZE: at least {} (one multipart part)",
                crate::storage::MIN_PART_SIZE
            ));
        }
        let max_page = number("WHARF_MAX_PAGE_SIZE", defaults.max_page as u64)?;
        if !(1..=1000).contains(&max_page) {
            return Err(format!("WHARF_MAX_PAGE_SIZE: between 1 and 1000, got {max_page}"));
        }
        let gc = match var("WHARF_GC").as_deref().map(str::trim) {
            None | Some("" | "off" | "false") => GcMode::Off,
            Some("dry-run") => GcMode::DryRun,
            Some("on" | "true") => GcMode::On,
            Some(other) => return Err(format!("WHARF_GC: expected off, dry-run or on, got \"{other}\"")),
        };
        let selftest = flag("WHARF_SELFTEST", false)?;
        if selftest && !cfg!(feature = "selftest") {
            return Err("WHARF_SELFTEST: this build has no self-test endpoints (the `selftest` feature)".into());
        }
        let admin_token = var("WHARF_ADMIN_TOKEN").filter(|t| !t.is_empty());
        if admin_token.as_ref().is_some_and(|t| t.len() < 32) {
            return Err("WHARF_ADMIN_TOKEN: at least 32 bytes".into());
        }
        Ok(Self {
            auth: crate::auth::AuthConfig::from_vars(var)?,
            max_page: max_page as usize,
            read_only: flag("WHARF_READ_ONLY", false)?,
            delete_enabled: flag("WHARF_DELETE_ENABLED", false)?,
            allowed_classes,
            selftest,
            max_chunk_size,
            upload_max_age_secs: number("WHARF_UPLOAD_MAX_AGE_SECONDS", defaults.upload_max_age_secs)?,
            tag_max_age_secs: number("WHARF_TAG_MAX_AGE_SECONDS", defaults.tag_max_age_secs)?,
            tag_memo_secs: number("WHARF_TAG_MEMO_SECONDS", defaults.tag_memo_secs)?,
            upstream: upstream::UpstreamConfig::from_vars(var)?,
            retention: retention::Retention::parse(&var("WHARF_RETENTION").unwrap_or_default())?,
            cors_origins: crate::base::cors::CorsOrigins::parse(&var("WHARF_CORS_ORIGINS").unwrap_or_default())?,
            gc,
            gc_untagged: flag("WHARF_GC_UNTAGGED", false)?,
            gc_grace_secs: number("WHARF_GC_GRACE_SECONDS", defaults.gc_grace_secs)?,
            admin_token,
            immutable_tags: tags::ImmutableTags::parse(&var("WHARF_IMMUTABLE_TAGS").unwrap_or_default())?,
            log_level: match var("WHARF_LOG_LEVEL") {
                None => defaults.log_level,
                Some(v) => crate::base::log::Level::parse(&v)
                    .ok_or_else(|| format!("WHARF_LOG_LEVEL: expected off, error, info or debug, got \"{v}\""))?,
            },
            notify: notify::NotifyConfig::from_vars(var)?,
            ui: flag("WHARF_UI", false)?,
            manifest_urls: ManifestUrls {
                allow: ManifestUrls::pattern("WHARF_MANIFEST_URLS_ALLOW", var("WHARF_MANIFEST_URLS_ALLOW").as_deref())?,
                deny: ManifestUrls::pattern("WHARF_MANIFEST_URLS_DENY", var("WHARF_MANIFEST_URLS_DENY").as_deref())?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_vars(&|name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn absent_variables_take_defaults() {
        assert_eq!(from(&[]).unwrap(), Config::default());
    }

    #[test]
    fn variables_are_parsed() {
        let c = from(&[
            ("WHARF_READ_ONLY", "true"),
            ("WHARF_DELETE_ENABLED", "1"),
            ("WHARF_ALLOWED_CLASSES", "image, plugin"),
        ])
        .unwrap();
        assert!(c.read_only && c.delete_enabled);
        assert_eq!(c.allowed_classes, ["image", "plugin"]);
        let c = from(&[("WHARF_MAX_CHUNK_SIZE", "10485760"), ("WHARF_UPLOAD_MAX_AGE_SECONDS", "60")]).unwrap();
        assert_eq!((c.max_chunk_size, c.upload_max_age_secs), (10 * 1024 * 1024, 60));
        let token = "t".repeat(32);
        let c = from(&[
            ("WHARF_GC", "dry-run"),
            ("WHARF_GC_UNTAGGED", "true"),
            ("WHARF_GC_GRACE_SECONDS", "0"),
            ("WHARF_ADMIN_TOKEN", &token),
        ])
        .unwrap();
        assert_eq!((c.gc, c.gc_untagged, c.gc_grace_secs), (GcMode::DryRun, true, 0));
        assert_eq!(c.admin_token.as_deref(), Some(token.as_str()));
        assert_eq!(from(&[("WHARF_GC", "on")]).unwrap().gc, GcMode::On);
    }

    #[test]
    fn unreadable_values_are_errors_naming_the_variable() {
        assert!(from(&[("WHARF_READ_ONLY", "maybe")]).unwrap_err().contains("WHARF_READ_ONLY"));
        assert!(from(&[("WHARF_ALLOWED_CLASSES", "image,weird")]).unwrap_err().contains("weird"));
        assert!(from(&[("WHARF_MAX_CHUNK_SIZE", "lots")]).unwrap_err().contains("WHARF_MAX_CHUNK_SIZE"));
        assert!(from(&[("WHARF_MAX_CHUNK_SIZE", "1024")]).unwrap_err().contains("at least"));
        assert!(from(&[("WHARF_UPLOAD_MAX_AGE_SECONDS", "-1")]).is_err());
        assert!(from(&[("WHARF_GC", "sometimes")]).unwrap_err().contains("WHARF_GC"));
        assert!(from(&[("WHARF_IMMUTABLE_TAGS", "v*, :x")]).unwrap_err().contains("WHARF_IMMUTABLE_TAGS"));
        assert!(from(&[("WHARF_LOG_LEVEL", "loud")]).unwrap_err().contains("WHARF_LOG_LEVEL"));
        assert_eq!(from(&[("WHARF_LOG_LEVEL", "debug")]).unwrap().log_level, crate::base::log::Level::Debug);
        assert!(from(&[("WHARF_ADMIN_TOKEN", "short")]).unwrap_err().contains("WHARF_ADMIN_TOKEN"));
        assert!(
            from(&[("WHARF_MANIFEST_URLS_ALLOW", "^https://(")]).unwrap_err().contains("WHARF_MANIFEST_URLS_ALLOW")
        );
        assert!(from(&[("WHARF_MANIFEST_URLS_DENY", "[z-a]")]).unwrap_err().contains("WHARF_MANIFEST_URLS_DENY"));
    }

    #[test]
    fn layer_urls_must_be_http_and_pass_the_patterns() {
        let open = from(&[]).unwrap().manifest_urls;
        assert_eq!(open.refuse("https://example.com/layer.tar"), None);
        assert_eq!(open.refuse("HTTP://example.com/a%20b?x=1#"), None);
        for bad in [
            "ftp://example.com/x",
            "example.com/x",
            "https:///x",
            "https://example.com/x#frag",
            "https://example.com/a b",
            "https://example.com/%zz",
            "https://example.com/%2",
            "",
        ] {
            assert!(open.refuse(bad).is_some(), "{bad:?}");
        }
        let c = from(&[
            ("WHARF_MANIFEST_URLS_ALLOW", r"^https://([^/]+\.)?example\.com/"),
            ("WHARF_MANIFEST_URLS_DENY", r"^https://private\.example\.com/"),
        ])
        .unwrap()
        .manifest_urls;
        assert_eq!(c.refuse("https://cdn.example.com/x"), None);
        assert!(c.refuse("https://example.org/x").unwrap().contains("allowed"));
        assert!(c.refuse("https://private.example.com/x").unwrap().contains("denied"));
        // Unanchored, as Go's MatchString.
        let d = from(&[("WHARF_MANIFEST_URLS_DENY", "secret")]).unwrap().manifest_urls;
        assert!(d.refuse("https://example.com/a/secret/b").is_some());
        assert_eq!(d.refuse("https://example.com/a"), None);
    }

    #[test]
    fn the_self_test_needs_a_build_with_it() {
        let on = from(&[("WHARF_SELFTEST", "true")]);
        match cfg!(feature = "selftest") {
            true => assert!(on.unwrap().selftest),
            false => assert!(on.unwrap_err().contains("selftest")),
        }
    }
}
