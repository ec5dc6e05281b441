//! End-to-end test of a running wharf registry with the `oci-client` crate
//! (the OCI Distribution client of the ORAS project).
//!
//! Usage:
//!   WHARF_URL=127.0.0.1:8787 cargo run -- [repository-prefix]
//!
//! `WHARF_URL` is `host:port` (an `http://` prefix is tolerated and stripped); the
//! repository defaults to `e2e/oci-client`. `WHARF_E2E_SEED` (u64) fixes the pseudo-random
//! blob contents; by default they change on every run so that nothing is deduplicated
//! against blobs left over by an earlier run.
//!
//! Every step prints one `[PASS]`/`[FAIL]` line. The first failure prints the final tally
//! and exits with status 1; otherwise the last line is `oci-client e2e: N passed, 0 failed`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{
    OciImageManifest, OciManifest, IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

const SMALL_LAYER: usize = 100 * 1024; // 100 KiB
const BIG_LAYER: usize = 7 * 1024 * 1024; // 7 MiB: > oci-client's 4 MiB chunk, > 5 MiB R2 part
const FRESH_CHUNKED_BLOB: usize = 9 * 1024 * 1024 + 12_345; // odd size, fresh bytes

type Step = Result<String, String>;

struct Tally {
    passed: usize,
}

impl Tally {
    fn record(&mut self, name: &str, started: Instant, result: Step) {
        let ms = started.elapsed().as_millis();
        match result {
            Ok(detail) => {
                self.passed += 1;
                println!("[PASS] {name} ({ms} ms): {detail}");
            }
            Err(err) => {
                println!("[FAIL] {name} ({ms} ms): {err}");
                println!("oci-client e2e: {} passed, 1 failed", self.passed);
                std::process::exit(1);
            }
        }
    }
}

/// Formats an oci-client error with everything it carries (for a server error that is
/// the URL, the status code and the response body).
fn oci_err(context: &str, e: OciDistributionError) -> String {
    format!("{context}: {e} [{e:?}]")
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in hash.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// splitmix64: tiny, dependency-free, good enough for distinct incompressible test bytes.
fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// The digest at the end of a `.../manifests/<digest>` Location URL.
fn digest_from_manifest_url(url: &str) -> Result<String, String> {
    let tail = url
        .rsplit_once("/manifests/")
        .map(|(_, t)| t)
        .ok_or_else(|| format!("manifest Location {url:?} has no /manifests/ segment"))?;
    let tail = tail.split(['?', '#']).next().unwrap_or(tail);
    ensure(tail.starts_with("sha256:") && tail.len() == 7 + 64, || {
        format!("manifest Location {url:?} does not end with a sha256 digest")
    })?;
    Ok(tail.to_string())
}

struct TestImage {
    config: Config,
    layers: Vec<ImageLayer>,
    /// Exactly what `Client::push(.., None)` builds (no `mediaType` field in the body).
    manifest: OciImageManifest,
}

fn build_image(seed: u64) -> TestImage {
    let small = pseudo_random_bytes(seed ^ 0x1111, SMALL_LAYER);
    let big = pseudo_random_bytes(seed ^ 0x2222, BIG_LAYER);
    // The layers are not real gzip, so the "diff_ids" are simply the digests of the bytes.
    let config_json = serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/true"],
            "Labels": { "org.example.wharf.e2e.seed": seed.to_string() }
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": [sha256_digest(&small), sha256_digest(&big)]
        },
        "history": [
            { "created": "2024-01-01T00:00:00Z", "created_by": "wharf e2e: small layer" },
            { "created": "2024-01-01T00:00:00Z", "created_by": "wharf e2e: big layer" }
        ]
    });
    let config =
        Config::new(serde_json::to_vec(&config_json).expect("config json"), IMAGE_CONFIG_MEDIA_TYPE.to_string(), None);
    let layers = vec![
        ImageLayer::new(small, IMAGE_LAYER_GZIP_MEDIA_TYPE.to_string(), None),
        ImageLayer::new(big, IMAGE_LAYER_GZIP_MEDIA_TYPE.to_string(), None),
    ];
    let manifest = OciImageManifest::build(&layers, &config, None);
    TestImage { config, layers, manifest }
}

fn client(monolithic: bool) -> Client {
    Client::new(ClientConfig { protocol: ClientProtocol::Http, use_monolithic_push: monolithic, ..Default::default() })
}

/// Pulls `reference` with `Client::pull` and compares everything with `image`.
async fn pull_and_compare(client: &Client, reference: &Reference, image: &TestImage, expected_digest: &str) -> Step {
    let auth = RegistryAuth::Anonymous;
    let pulled = client
        .pull(reference, &auth, vec![IMAGE_LAYER_GZIP_MEDIA_TYPE])
        .await
        .map_err(|e| oci_err(&format!("pull {reference}"), e))?;

    ensure(pulled.config.data == image.config.data, || {
        format!(
            "config bytes differ: pushed {} bytes {}, pulled {} bytes {}",
            image.config.data.len(),
            sha256_digest(&image.config.data),
            pulled.config.data.len(),
            sha256_digest(&pulled.config.data)
        )
    })?;
    ensure(pulled.config.media_type == IMAGE_CONFIG_MEDIA_TYPE, || {
        format!("config media type {:?}", pulled.config.media_type)
    })?;
    ensure(pulled.layers.len() == image.layers.len(), || {
        format!("pulled {} layers, pushed {}", pulled.layers.len(), image.layers.len())
    })?;
    // Client::pull downloads layers concurrently (buffer_unordered), so match by digest.
    for (i, want) in image.layers.iter().enumerate() {
        let want_digest = sha256_digest(&want.data);
        let got = pulled
            .layers
            .iter()
            .find(|l| l.data.len() == want.data.len() && sha256_digest(&l.data) == want_digest)
            .ok_or_else(|| {
                let got: Vec<String> = pulled
                    .layers
                    .iter()
                    .map(|l| format!("{} bytes {}", l.data.len(), sha256_digest(&l.data)))
                    .collect();
                format!("layer {i} ({} bytes {want_digest}) not among pulled layers: {got:?}", want.data.len())
            })?;
        ensure(got.data == want.data, || format!("layer {i} bytes differ"))?;
        ensure(got.media_type == IMAGE_LAYER_GZIP_MEDIA_TYPE, || format!("layer {i} media type {:?}", got.media_type))?;
    }
    let pulled_digest = pulled.digest.ok_or_else(|| "pull returned no manifest digest".to_string())?;
    ensure(pulled_digest == expected_digest, || {
        format!("pull digest {pulled_digest} != pushed manifest digest {expected_digest}")
    })?;
    let pulled_manifest = pulled.manifest.ok_or_else(|| "pull returned no manifest".to_string())?;
    let (a, b) = (serde_json::to_value(&pulled_manifest).unwrap(), serde_json::to_value(&image.manifest).unwrap());
    ensure(a == b, || format!("pulled manifest differs from pushed one:\n pulled {a}\n pushed {b}"))?;
    Ok(format!(
        "config {} B + layers {} B / {} B byte-identical, digest {}",
        image.config.data.len(),
        image.layers[0].data.len(),
        image.layers[1].data.len(),
        short(expected_digest)
    ))
}

/// Checks the manifest digest by every other means the crate offers: HEAD
/// (`fetch_manifest_digest`), parsed GET (`pull_manifest`), raw GET (`pull_manifest_raw`,
/// whose body must hash to the digest), and a GET by digest.
async fn check_manifest_digest(client: &Client, reference: &Reference, expected_digest: &str) -> Step {
    let auth = RegistryAuth::Anonymous;
    let head = client
        .fetch_manifest_digest(reference, &auth)
        .await
        .map_err(|e| oci_err(&format!("fetch_manifest_digest {reference}"), e))?;
    ensure(head == expected_digest, || format!("fetch_manifest_digest {head} != pushed {expected_digest}"))?;

    let (manifest, digest) =
        client.pull_manifest(reference, &auth).await.map_err(|e| oci_err(&format!("pull_manifest {reference}"), e))?;
    ensure(digest == expected_digest, || format!("pull_manifest digest {digest} != pushed {expected_digest}"))?;
    ensure(matches!(manifest, OciManifest::Image(_)), || {
        format!("pull_manifest returned a non-image manifest: {manifest}")
    })?;

    let (raw, raw_digest) = client
        .pull_manifest_raw(reference, &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(|e| oci_err(&format!("pull_manifest_raw {reference}"), e))?;
    ensure(raw_digest == expected_digest, || {
        format!("pull_manifest_raw digest {raw_digest} != pushed {expected_digest}")
    })?;
    ensure(sha256_digest(&raw) == expected_digest, || {
        format!(
            "sha256 of the manifest body ({}) != {expected_digest}; body: {}",
            sha256_digest(&raw),
            String::from_utf8_lossy(&raw)
        )
    })?;

    let by_digest = Reference::with_digest(
        reference.registry().to_string(),
        reference.repository().to_string(),
        expected_digest.to_string(),
    );
    let (_, d) =
        client.pull_manifest(&by_digest, &auth).await.map_err(|e| oci_err(&format!("pull_manifest {by_digest}"), e))?;
    ensure(d == expected_digest, || format!("pull_manifest by digest returned {d}"))?;
    Ok(format!("HEAD, GET (parsed, raw {} B) and GET-by-digest all give {}", raw.len(), short(expected_digest)))
}

/// Splits `data` into stream items of the given sizes (the rest in one last item).
fn stream_of(
    data: &Bytes,
    sizes: &[usize],
) -> impl futures_util::Stream<Item = oci_client::errors::Result<Bytes>> + Send + 'static {
    let mut items = Vec::new();
    let mut rest = data.clone();
    for &n in sizes {
        if rest.is_empty() {
            break;
        }
        items.push(Ok(rest.split_to(n.min(rest.len()))));
    }
    if !rest.is_empty() {
        items.push(Ok(rest));
    }
    futures_util::stream::iter(items)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::var("WHARF_URL").unwrap_or_else(|_| {
        eprintln!("WHARF_URL is not set (expected host:port, e.g. 127.0.0.1:8787)");
        std::process::exit(2);
    });
    let registry = url.trim().trim_start_matches("http://").trim_end_matches('/').to_string();
    let repo = std::env::args().nth(1).unwrap_or_else(|| "e2e/oci-client".to_string());
    let seed: u64 = match std::env::var("WHARF_E2E_SEED") {
        Ok(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("WHARF_E2E_SEED must be a u64");
            std::process::exit(2);
        }),
        Err(_) => {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
            nanos ^ ((std::process::id() as u64) << 32)
        }
    };
    println!("oci-client e2e: registry http://{registry}, repository {repo}, seed {seed}");

    let mut tally = Tally { passed: 0 };
    let auth = RegistryAuth::Anonymous;
    let tag_ref = |tag: &str| Reference::with_tag(registry.clone(), repo.clone(), tag.to_string());
    let v1 = tag_ref("v1");
    let v1_chunked = tag_ref("v1-chunked");

    // 1. Build the image offline.
    let t = Instant::now();
    let image = build_image(seed);
    let detail = format!(
        "config {} B {}, layers {} B {} and {} B {}",
        image.config.data.len(),
        short(&image.manifest.config.digest),
        image.layers[0].data.len(),
        short(&image.manifest.layers[0].digest),
        image.layers[1].data.len(),
        short(&image.manifest.layers[1].digest),
    );
    tally.record("build image in memory", t, Ok(detail));

    // 2. Push with Client::push, monolithic uploads (POST, then one PUT with the whole blob).
    let mono = client(true);
    let t = Instant::now();
    let result: Result<String, String> = async {
        let resp = mono
            .push(&v1, &image.layers, image.config.clone(), &auth, None)
            .await
            .map_err(|e| oci_err(&format!("push {v1}"), e))?;
        let digest = digest_from_manifest_url(&resp.manifest_url)?;
        Ok(digest)
    }
    .await;
    let pushed_digest = result.clone().unwrap_or_default();
    tally.record(
        "push v1 (Client::push, monolithic POST+PUT)",
        t,
        result.map(|d| format!("manifest Location digest {d}")),
    );

    // 3. Pull it back and compare byte for byte.
    let t = Instant::now();
    let r = pull_and_compare(&mono, &v1, &image, &pushed_digest).await;
    tally.record("pull v1 (Client::pull) and compare", t, r);

    // 3b. The manifest digest, by every route.
    let t = Instant::now();
    let r = check_manifest_digest(&mono, &v1, &pushed_digest).await;
    tally.record("v1 manifest digest == pushed digest", t, r);

    // 4. The same image again, with chunked uploads: POST, PATCH (Content-Range, at most
    // 4 MiB each, oci-client's fixed chunk size), PUT ?digest=. `push_blob_stream` is used
    // instead of `Client::push` because `push_blob` silently falls back to a monolithic
    // upload when the chunked path returns an unexpected 2xx, which would hide a bug.
    let chunked = client(false);
    let t = Instant::now();
    let result: Result<String, String> = async {
        let mut patches = Vec::new();
        let blobs = std::iter::once((&image.config.data, &image.manifest.config.digest))
            .chain(image.layers.iter().zip(&image.manifest.layers).map(|(l, d)| (&l.data, &d.digest)));
        for (data, digest) in blobs {
            chunked
                .push_blob_stream(&v1_chunked, stream_of(data, &[]), digest, None)
                .await
                .map_err(|e| oci_err(&format!("chunked push of blob {digest}"), e))?;
            patches.push(data.len().div_ceil(4 * 1024 * 1024));
        }
        let url = chunked
            .push_manifest(&v1_chunked, &image.manifest.clone().into())
            .await
            .map_err(|e| oci_err(&format!("push_manifest {v1_chunked}"), e))?;
        let digest = digest_from_manifest_url(&url)?;
        ensure(digest == pushed_digest, || {
            format!("v1-chunked manifest digest {digest} != v1 digest {pushed_digest}")
        })?;
        Ok(format!("3 blobs in {:?} PATCHes each, manifest digest {} (same as v1)", patches, short(&digest)))
    }
    .await;
    tally.record("push v1-chunked (push_blob_stream: POST+PATCH..+PUT, push_manifest)", t, result);

    let t = Instant::now();
    let r = pull_and_compare(&chunked, &v1_chunked, &image, &pushed_digest).await;
    tally.record("pull v1-chunked (Client::pull) and compare", t, r);

    let t = Instant::now();
    let r = check_manifest_digest(&chunked, &v1_chunked, &pushed_digest).await;
    tally.record("v1-chunked manifest digest == pushed digest", t, r);

    // 4b. The blobs above already existed (pushed by step 2), so a registry that dedupes
    // never had to store chunked bytes. Push a blob nobody has seen with
    // push_blob_stream_chunked (digest computed on the fly, irregular stream items so the
    // PATCHes are 1 MiB, 4 MiB, 1 MiB, 3 MiB+) and read it back.
    let t = Instant::now();
    let result: Result<String, String> = async {
        let data = Bytes::from(pseudo_random_bytes(seed ^ 0x3333, FRESH_CHUNKED_BLOB));
        let want = sha256_digest(&data);
        let mib = 1024 * 1024;
        let resp = chunked
            .push_blob_stream_chunked(&v1_chunked, stream_of(&data, &[mib, 5 * mib]))
            .await
            .map_err(|e| oci_err("push_blob_stream_chunked", e))?;
        ensure(resp.blob_digest == want, || format!("client computed {} but the data is {want}", resp.blob_digest))?;
        ensure(resp.size == data.len() as u64, || format!("client sent {} bytes of {}", resp.size, data.len()))?;
        let exists =
            chunked.blob_exists(&v1_chunked, &want).await.map_err(|e| oci_err(&format!("blob_exists {want}"), e))?;
        ensure(exists, || format!("HEAD blob {want}: not found after upload"))?;
        let mut out: Vec<u8> = Vec::with_capacity(data.len());
        chunked
            .pull_blob(&v1_chunked, want.as_str(), &mut out)
            .await
            .map_err(|e| oci_err(&format!("pull_blob {want}"), e))?;
        ensure(out.len() == data.len() && out[..] == data[..], || {
            format!("pulled {} bytes {}, pushed {} bytes {want}", out.len(), sha256_digest(&out), data.len())
        })?;
        Ok(format!("{} B blob {} stored, HEAD ok, GET byte-identical", data.len(), short(&want)))
    }
    .await;
    tally.record("fresh blob via push_blob_stream_chunked, HEAD, GET", t, result);

    // 5. Both tags are listed.
    let t = Instant::now();
    let result =
        mono.list_tags(&v1, &auth, None, None).await.map_err(|e| oci_err(&format!("list_tags {repo}"), e)).and_then(
            |tags| {
                ensure(tags.name == repo, || format!("tags/list name {:?} != {repo:?}", tags.name))?;
                for want in ["v1", "v1-chunked"] {
                    ensure(tags.tags.iter().any(|t| t == want), || format!("tag {want} missing from {:?}", tags.tags))?;
                }
                Ok(format!("{:?}", tags.tags))
            },
        );
    tally.record("list_tags has v1 and v1-chunked", t, result);

    println!("oci-client e2e: {} passed, 0 failed", tally.passed);
}
