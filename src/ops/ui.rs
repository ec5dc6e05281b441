//! The web UI (`WHARF_UI=true`): server-rendered HTML, no JavaScript, one small stylesheet.
//!
//! - `/ui/`: repositories, with a search box (`?q=`);
//! - `/ui/repo/<name>`: a repository's tags with digest, platforms, size and push time;
//! - `/ui/repo/<name>/manifest/<digest>`: a manifest's config, layers, an index's platforms,
//!   its referrers (signatures, SBOMs) and pull commands.
//!
//! It follows the API's access rules. Anonymous visitors see what anonymous clients may pull.
//! A private repository answers 401 with a Basic challenge, so the browser asks for the same
//! user and password as `docker login`; `/ui/login` asks for them up front. Every value shown is
//! HTML-escaped (tags, annotations and artifact types come from whoever pushed), and the pages
//! forbid scripts outright (Content-Security-Policy).

use crate::auth::Identity;
use crate::auth::access::Actions;
use crate::base::error::{ErrorCode, RegistryError};
use crate::base::http::{Body, Headers, Method, Response, query_param};
use crate::base::names::{Digest, MAX_TAG_LEN, RepositoryName, Tag};
use crate::base::pagination::listing_start;
use crate::oci::manifests::format::{Manifest, Platform};
use crate::registry::{Registry, Result};
use crate::storage::keys::{self, TagRecord};
use crate::storage::{KeyValueStore, ListFrom, Listing, ObjectStore};
use futures_util::future::join_all;
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Write;

pub const UI_PREFIX: &str = "/ui";

/// Most repositories one page lists.
const PAGE: usize = 200;

/// Most tags one page lists. Each manifest shown costs up to three reads (manifest, config link,
/// config), and a Worker on the Free plan may make 50 subrequests per request.
const TAGS_PAGE: usize = 12;

/// Most listings (of 1,000 names) a page makes to search the catalog or a repository's tags.
const SCAN_PAGES: usize = 5;

const CSS: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}\
header{background:#14335a;color:#fff;padding:.7em 1.5em}header a{color:#fff;text-decoration:none}\
main{max-width:72em;margin:1.5em auto;padding:0 1.5em}h1{font-size:1.4em;word-break:break-all}\
table{border-collapse:collapse;width:100%;background:#fff}td,th{text-align:left;padding:.45em .6em;\
border-bottom:1px solid #e3e6eb;vertical-align:top}th{background:#eef1f5;font-weight:600}\
code,.cmd{font:13px ui-monospace,monospace;word-break:break-all}.cmd{display:block;background:#fff;\
border:1px solid #cfd5dd;padding:.5em;margin:.3em 0 1em;user-select:all}ul.repos{list-style:none;padding:0}\
ul.repos li{background:#fff;margin:.3em 0;padding:.55em .8em;border:1px solid #e3e6eb}\
.muted{color:#66707d}form{margin:0 0 1em}input[type=search]{padding:.4em;width:20em}";

/// `&`, `<`, `>`, `"` and `'` as entities: enough for text and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `path` is one of the UI's.
pub fn is_ui_path(path: &str) -> bool {
    path == UI_PREFIX || path.starts_with("/ui/")
}

/// An error as a page, with its status and headers (a login challenge), for browsers.
pub fn error_page<S>(e: RegistryError) -> Response<S> {
    let content = format!("<h1>{}</h1><p class=\"muted\">{}</p>", e.status(), escape(e.message()));
    let mut response = page(e.message(), "", &content);
    response.status = e.status();
    response.headers.extend(e.headers);
    response
}

fn page<S>(title: &str, crumbs: &str, content: &str) -> Response<S> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width,initial-scale=1\"><title>{} · wharf</title><style>{CSS}</style></head>\
         <body><header><a href=\"/ui/\"><b>wharf</b></a>{crumbs}</header><main>{content}</main></body></html>",
        escape(title)
    );
    Response::new(200)
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Content-Length", html.len().to_string())
        // What a page shows depends on who asks: never kept by a shared cache.
        .header("Cache-Control", "no-store")
        .header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        )
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "no-referrer")
        .body(Body::Bytes(html.into_bytes()))
}

/// Sizes to one decimal, in integers: float formatting would cost the wasm kilobytes.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= 1024u64.pow(unit as u32 + 1) {
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    let tenths = (u128::from(bytes) * 10 + (1u128 << (10 * unit)) / 2) >> (10 * unit);
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

fn when(ms: u64) -> String {
    let t = crate::base::time::rfc3339(ms / 1000);
    format!("{} {} UTC", &t[..10], &t[11..16])
}

fn platform(p: &Platform) -> String {
    format!("{}/{}", p.os, p.architecture)
}

fn short(d: &Digest) -> String {
    format!("{}:{}", d.algorithm().as_str(), &d.hex()[..12])
}

fn repo_url(name: &RepositoryName) -> String {
    format!("{UI_PREFIX}/repo/{name}")
}

fn manifest_page_url(name: &RepositoryName, d: &Digest) -> String {
    format!("{UI_PREFIX}/repo/{name}/manifest/{d}")
}

fn not_found() -> RegistryError {
    RegistryError::new(ErrorCode::RouteUnknown)
}

/// The pages' routes.
enum Page {
    Repositories,
    Login,
    Repository(RepositoryName),
    Manifest(RepositoryName, Digest),
}

fn route(path: &str) -> Result<Page> {
    let rest = path.strip_prefix(UI_PREFIX).ok_or_else(not_found)?;
    match rest {
        "" | "/" => return Ok(Page::Repositories),
        "/login" => return Ok(Page::Login),
        _ => {}
    }
    let repo = rest.strip_prefix("/repo/").ok_or_else(not_found)?;
    // A digest has a ':' and a name never does, so the split is unambiguous.
    if let Some((name, digest)) = repo.rsplit_once("/manifest/").filter(|(_, d)| d.contains(':')) {
        return Ok(Page::Manifest(
            crate::base::router::name(name)?,
            Digest::parse(&crate::base::http::percent_decode(digest))?,
        ));
    }
    Ok(Page::Repository(crate::base::router::name(repo.trim_end_matches('/'))?))
}

/// What the UI knows of a manifest for a table row.
struct Summary {
    kind: &'static str,
    platforms: Vec<String>,
    size: u64,
}

impl<O: ObjectStore, K: KeyValueStore> Registry<O, K> {
    /// Serves a page of the UI.
    pub(crate) async fn ui(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        h: &Headers,
        origin: &str,
    ) -> Result<Response<O::Body>> {
        if method != Method::Get && method != Method::Head {
            return Err(RegistryError::new(ErrorCode::Unsupported).with_message("the UI only answers GET"));
        }
        let identity = match &self.config.auth {
            Some(auth) => Some(self.identify(auth, h).await.map_err(basic_challenge)?),
            None => None,
        };
        let may_pull = |name: &RepositoryName| match (&self.config.auth, &identity) {
            (Some(auth), Some(id)) => auth.permitted(id, name.as_str()).contains(Actions::PULL),
            _ => true,
        };
        let host = origin.split_once("://").map_or(origin, |(_, h)| h);
        let user = identity.as_ref().and_then(Identity::user);
        let crumbs = |extra: &str| match user {
            Some(u) => format!("{extra}<span style=\"float:right\">{}</span>", escape(u)),
            None if self.config.auth.is_some() => {
                format!("{extra}<a style=\"float:right\" href=\"/ui/login\">log in</a>")
            }
            None => extra.to_owned(),
        };
        match route(path)? {
            Page::Login if user.is_none() && self.config.auth.is_some() => {
                Err(basic_challenge(RegistryError::new(ErrorCode::Unauthorized)))
            }
            Page::Login => Ok(Response::new(302).header("Location", "/ui/").header("Content-Length", "0")),
            Page::Repositories => {
                self.repositories_page(query_param(query, "q").unwrap_or(""), &may_pull, &crumbs("")).await
            }
            Page::Repository(name) | Page::Manifest(name, _) if !may_pull(&name) => {
                // Anonymous: ask who it is. Known but without the right: the same answer as a
                // repository that does not exist, so names are not revealed.
                Err(match user {
                    None => basic_challenge(RegistryError::new(ErrorCode::Unauthorized)),
                    Some(_) => RegistryError::new(ErrorCode::NameUnknown),
                })
            }
            Page::Repository(name) => {
                let crumb = format!(" / <a href=\"{}\">{}</a>", repo_url(&name), escape(name.as_str()));
                self.repository_page(&name, query_param(query, "after"), host, &crumbs(&crumb)).await
            }
            Page::Manifest(name, digest) => {
                let crumb =
                    format!(" / <a href=\"{}\">{}</a> / {}", repo_url(&name), escape(name.as_str()), short(&digest));
                self.manifest_page(&name, &digest, host, &crumbs(&crumb)).await
            }
        }
    }

    async fn repositories_page(
        &self,
        q: &str,
        may_pull: &impl Fn(&RepositoryName) -> bool,
        crumbs: &str,
    ) -> Result<Response<O::Body>> {
        // The first PAGE names that match, among the first SCAN_PAGES listings of the catalog:
        // a search costs what a page costs, however large the registry.
        let mut names = Vec::new();
        let mut cursor = None;
        let mut scanned_all = false;
        'scan: for _ in 0..SCAN_PAGES {
            let from = cursor.as_deref().map_or(ListFrom::Beginning, ListFrom::Cursor);
            let listed = self.objects.list(keys::CATALOG_PREFIX, from, 1000).await?;
            for name in listed.objects.iter().filter_map(|o| keys::repository_of(&o.key)) {
                if name.as_str().contains(q) && may_pull(&name) {
                    names.push(name);
                    if names.len() > PAGE {
                        break 'scan;
                    }
                }
            }
            cursor = listed.cursor;
            if cursor.is_none() {
                scanned_all = true;
                break;
            }
        }
        let mut html = format!(
            "<h1>Repositories</h1><form method=\"get\" action=\"/ui/\"><input type=\"search\" name=\"q\" \
             value=\"{}\" placeholder=\"search repositories\"> <button>Search</button></form>",
            escape(q)
        );
        if names.is_empty() {
            html.push_str("<p class=\"muted\">No repositories.</p>");
        }
        html.push_str("<ul class=\"repos\">");
        for name in names.iter().take(PAGE) {
            let _ = write!(html, "<li><a href=\"{}\">{}</a></li>", repo_url(name), escape(name.as_str()));
        }
        html.push_str("</ul>");
        if names.len() > PAGE || !scanned_all {
            let _ = write!(html, "<p class=\"muted\">Not every repository is shown: narrow the search.</p>");
        }
        Ok(page("Repositories", crumbs, &html))
    }

    /// A page of tags, in lexical order after `after`: one listing of the repository's tags in
    /// R2, whose objects say when each tag was pushed, and a summary of each manifest shown
    /// (each read once). What it costs is bounded by the page, not by the repository.
    async fn repository_page(
        &self,
        name: &RepositoryName,
        after: Option<&str>,
        host: &str,
        crumbs: &str,
    ) -> Result<Response<O::Body>> {
        let prefix = keys::tag_objects_prefix(name);
        let start = after.map(|a| format!("{prefix}{}", listing_start(a, MAX_TAG_LEN)));
        let from = start.as_deref().map_or(ListFrom::Beginning, ListFrom::After);
        let listed = self.objects.list(&prefix, from, TAGS_PAGE as u32 + 1).await?;
        let tags: Vec<(Tag, TagRecord, u64)> = listed
            .objects
            .iter()
            .filter_map(|o| Some((keys::tag_of(&o.key, &prefix)?, TagRecord::from_metadata(&o.custom)?, o.uploaded_ms)))
            .collect();
        if tags.is_empty() && !self.repository_exists(name).await? {
            return Err(RegistryError::new(ErrorCode::NameUnknown).with_detail(json!({ "name": name.as_str() })));
        }
        let shown = &tags[..tags.len().min(TAGS_PAGE)];
        let mut digests: Vec<&str> = shown.iter().map(|(_, r, _)| r.digest.as_str()).collect();
        digests.sort_unstable();
        digests.dedup();
        let mut summaries = Vec::new();
        for batch in digests.chunks(6) {
            summaries.extend(join_all(batch.iter().map(|d| self.summary(name, d))).await);
        }
        let summaries: HashMap<&str, Summary> =
            digests.into_iter().zip(summaries).map(|(d, s)| s.map(|s| (d, s))).collect::<Result<_>>()?;
        let mut html = format!("<h1>{}</h1>", escape(name.as_str()));
        html.push_str(
            "<table><tr><th>Tag</th><th>Digest</th><th>Type</th><th>Platforms</th><th>Size</th><th>Pushed</th></tr>",
        );
        for (tag, record, pushed_ms) in shown {
            let (Ok(d), Some(summary)) = (Digest::parse(&record.digest), summaries.get(record.digest.as_str())) else {
                continue;
            };
            let _ = write!(
                html,
                "<tr><td><b>{tag}</b><code class=\"cmd\">docker pull {host}/{name}:{tag}</code></td><td><a href=\"{url}\"><code>{short}</code></a></td>\
                 <td>{kind}</td><td>{platforms}</td><td>{size}</td><td>{pushed_at}</td></tr>",
                tag = escape(tag.as_str()),
                host = escape(host),
                name = escape(name.as_str()),
                url = manifest_page_url(name, &d),
                short = short(&d),
                kind = summary.kind,
                platforms = escape(&summary.platforms.join(", ")),
                size = size(summary.size),
                pushed_at = when(*pushed_ms),
            );
        }
        html.push_str("</table>");
        if tags.is_empty() {
            html.push_str("<p class=\"muted\">No tags.</p>");
        }
        if let Some((last, _, _)) = shown.last().filter(|_| tags.len() > TAGS_PAGE || listed.cursor.is_some()) {
            let _ =
                write!(html, "<p><a href=\"{}?after={}\">Next tags →</a></p>", repo_url(name), escape(last.as_str()));
        }
        Ok(page(name.as_str(), crumbs, &html))
    }

    /// Kind, platforms and size of a manifest: an index's from its children, an image's from
    /// its config (one more small read).
    async fn summary(&self, name: &RepositoryName, digest: &str) -> Result<Summary> {
        let unknown = || Summary { kind: "?", platforms: Vec::new(), size: 0 };
        let Ok(d) = Digest::parse(digest) else { return Ok(unknown()) };
        let Some((manifest, _)) = self.read_manifest(name, &d).await? else { return Ok(unknown()) };
        if manifest.media_type.is_list() {
            let children: Vec<_> = manifest.child_manifests().collect();
            let platforms = children.iter().filter_map(|c| c.platform.as_ref()).map(platform).collect();
            return Ok(Summary { kind: "index", platforms, size: children.iter().map(|c| c.size).sum() });
        }
        let size = manifest.config.iter().chain(&manifest.references).map(|d| d.size).sum();
        let platforms = match &manifest.config {
            Some(c) => self.config_platform(name, &c.digest).await?.into_iter().collect(),
            None => Vec::new(),
        };
        Ok(Summary { kind: "image", platforms, size })
    }

    /// A manifest parsed, with its bytes.
    async fn read_manifest(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<(Manifest, Vec<u8>)>> {
        let Some((meta, bytes)) = self.objects.get_bytes(&keys::manifest(name, digest)).await? else { return Ok(None) };
        Ok(Manifest::parse(meta.content_type.as_deref(), &bytes).ok().map(|m| (m, bytes)))
    }

    /// `os/architecture` from an image config (skipped above 1 MiB, or when not JSON).
    async fn config_platform(&self, name: &RepositoryName, config: &Digest) -> Result<Option<String>> {
        let Some(link) = self.blob_link(name, config).await?.filter(|l| l.size <= 1 << 20) else { return Ok(None) };
        let Some((_, bytes)) = self.objects.get_bytes(&link.object).await? else { return Ok(None) };
        Ok(Platform::of_config(&bytes).filter(|p| !p.os.is_empty()).map(|p| platform(&p)))
    }

    async fn manifest_page(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        host: &str,
        crumbs: &str,
    ) -> Result<Response<O::Body>> {
        let (manifest, bytes) =
            self.read_manifest(name, digest).await?.ok_or_else(|| RegistryError::new(ErrorCode::ManifestUnknown))?;
        // The tags naming it, among the first listings of the repository's tags: a page costs
        // what a page costs, however many tags the repository has.
        let prefix = keys::tag_objects_prefix(name);
        let target = digest.to_string();
        let mut tags: Vec<String> = Vec::new();
        let mut cursor = None;
        for _ in 0..SCAN_PAGES {
            let from = cursor.as_deref().map_or(ListFrom::Beginning, ListFrom::Cursor);
            let listed = self.objects.list(&prefix, from, 1000).await?;
            for o in &listed.objects {
                if TagRecord::from_metadata(&o.custom).is_some_and(|r| r.digest == target) {
                    tags.extend(keys::tag_of(&o.key, &prefix).map(|t| t.to_string()));
                }
            }
            cursor = listed.cursor;
            if cursor.is_none() {
                break;
            }
        }
        if cursor.is_some() {
            tags.push("…".to_owned());
        }
        let mut html = format!(
            "<h1>{}@{}</h1><table><tr><th>Media type</th><td><code>{}</code></td></tr><tr><th>Digest</th><td><code>{digest}</code></td></tr>\
             <tr><th>Size</th><td>{}</td></tr><tr><th>Tags</th><td>{}</td></tr></table>",
            escape(name.as_str()),
            short(digest),
            manifest.media_type.as_str(),
            size(bytes.len() as u64),
            escape(&tags.join(", ")),
        );
        let _ = write!(
            html,
            "<h2>Pull</h2><code class=\"cmd\">docker pull {}/{}@{digest}</code>",
            escape(host),
            escape(name.as_str())
        );
        if let Some(t) = tags.first() {
            let _ = write!(
                html,
                "<code class=\"cmd\">docker pull {}/{}:{}</code>",
                escape(host),
                escape(name.as_str()),
                escape(t)
            );
        }
        if manifest.media_type.is_list() {
            html.push_str("<h2>Platforms</h2><table><tr><th>Platform</th><th>Digest</th><th>Size</th></tr>");
            for c in manifest.child_manifests() {
                let p = c.platform.as_ref().map(platform).unwrap_or_default();
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td><a href=\"{}\"><code>{}</code></a></td><td>{}</td></tr>",
                    escape(&p),
                    manifest_page_url(name, &c.digest),
                    c.digest,
                    size(c.size)
                );
            }
            html.push_str("</table>");
        } else {
            if let Some(c) = &manifest.config {
                let p = self.config_platform(name, &c.digest).await?.unwrap_or_default();
                let _ = write!(
                    html,
                    "<h2>Config</h2><table><tr><th>Media type</th><th>Digest</th><th>Size</th><th>Platform</th></tr><tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr></table>",
                    escape(&c.media_type),
                    c.digest,
                    size(c.size),
                    escape(&p)
                );
            }
            let total: u64 = manifest.references.iter().map(|l| l.size).sum();
            let _ = write!(
                html,
                "<h2>Layers</h2><p class=\"muted\">{} layers, {}</p><table><tr><th>#</th><th>Media type</th><th>Digest</th><th>Size</th></tr>",
                manifest.references.len(),
                size(total)
            );
            for (i, l) in manifest.references.iter().enumerate() {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
                    i + 1,
                    escape(&l.media_type),
                    l.digest,
                    size(l.size)
                );
            }
            html.push_str("</table>");
        }
        if let Some(subject) = &manifest.subject {
            let _ = write!(
                html,
                "<h2>Subject</h2><p><a href=\"{}\"><code>{}</code></a></p>",
                manifest_page_url(name, &subject.digest),
                subject.digest
            );
        }
        let prefix = keys::referrers_prefix(name, digest);
        let mut listing = Listing::new(prefix.clone());
        let mut referrers = String::new();
        while let Some(entry) = listing.next(&self.objects).await? {
            let Some(d) = keys::referrer_of(&entry.key, &prefix) else { continue };
            let kind = entry.custom.get("artifactType").map(String::as_str).unwrap_or("");
            let bytes = entry.custom.get("size").and_then(|s| s.parse().ok()).unwrap_or(0);
            let _ = write!(
                referrers,
                "<tr><td><code>{}</code></td><td><a href=\"{}\"><code>{}</code></a></td><td>{}</td></tr>",
                escape(kind),
                manifest_page_url(name, &d),
                d,
                size(bytes)
            );
        }
        html.push_str("<h2>Referrers</h2>");
        if referrers.is_empty() {
            html.push_str("<p class=\"muted\">No signatures, SBOMs or other referrers.</p>");
        } else {
            let _ =
                write!(html, "<table><tr><th>Artifact type</th><th>Digest</th><th>Size</th></tr>{referrers}</table>");
        }
        Ok(page(&format!("{name}@{}", short(digest)), crumbs, &html))
    }
}

/// A 401 that makes browsers ask for a user and password.
fn basic_challenge(e: RegistryError) -> RegistryError {
    match e.code {
        ErrorCode::Unauthorized => e.with_header("WWW-Authenticate", "Basic realm=\"wharf\", charset=\"UTF-8\""),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(escape("<script>\"x\"&'y'</script>"), "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;");
    }

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(when(1_795_740_123_456), "2026-11-27 00:42 UTC");
    }

    #[test]
    fn page_routes_split_names_from_digests() {
        let d = Digest::sha256_of(b"x");
        assert!(matches!(route("/ui/"), Ok(Page::Repositories)));
        assert!(matches!(route("/ui/repo/a/manifest/b"), Ok(Page::Repository(n)) if n.as_str() == "a/manifest/b"));
        assert!(
            matches!(route(&format!("/ui/repo/a/b/manifest/{d}")), Ok(Page::Manifest(n, x)) if n.as_str() == "a/b" && x == d)
        );
        assert!(route("/ui/repo/A").is_err());
        assert!(route("/ui/other").is_err());
    }
}
