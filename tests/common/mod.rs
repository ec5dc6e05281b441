//! Shared helpers of the native integration tests: a registry over the in-memory backends,
//! requests in one line, and fixtures that build images the way clients push them.
#![allow(dead_code)]

use futures_executor::block_on;
use futures_util::future::LocalBoxFuture;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wharf::base::http::{Body, Headers, MemoryBody, Method, Request};
use wharf::base::names::Digest;
use wharf::registry::host::{Upstream, UpstreamRequest, UpstreamResponse};
use wharf::storage::memory::{Faults, MemoryKv, MemoryObjects, Operations, Platform, Usage};
use wharf::{Config, Registry};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

pub struct TestRegistry {
    pub registry: Registry<MemoryObjects, MemoryKv>,
    pub objects: MemoryObjects,
    pub kv: MemoryKv,
    /// The registry's clock, in seconds (it reads milliseconds); tests move it.
    pub now: Rc<Cell<u64>>,
    /// What the stores did: R2 and KV reads and writes, sequential round trips.
    pub operations: Operations,
    /// The platform model this registry's location runs on, if any.
    pub platform: Option<Platform>,
}

/// A registry over these stores on the clock `now` (seconds); on the platform model, with the
/// model's timer, so that a write refused for load is retried a second later.
fn registry(
    objects: &MemoryObjects,
    kv: &MemoryKv,
    config: impl Into<Rc<Config>>,
    now: &Rc<Cell<u64>>,
    platform: &Option<Platform>,
) -> Registry<MemoryObjects, MemoryKv> {
    let clock = now.clone();
    let registry = Registry::new(objects.clone(), kv.clone(), config, Box::new(move || clock.get() * 1000));
    match platform {
        Some(_) => registry.with_sleep(model_sleep(now)),
        None => registry,
    }
}

/// The model's timer: a wait moves the clock on, in whole seconds.
fn model_sleep(now: &Rc<Cell<u64>>) -> wharf::storage::retry::Sleep {
    let now = now.clone();
    Rc::new(move |ms| {
        now.set(now.get() + ms.div_ceil(1000));
        Box::pin(async {})
    })
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }
    /// The code of the first error of an OCI error body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Storage as a comparable value, to assert that a refused request changed nothing.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub objects: std::collections::BTreeMap<String, Vec<u8>>,
    kv: std::collections::BTreeMap<String, String>,
    open_uploads: usize,
}

impl TestRegistry {
    pub fn new() -> Self {
        Self::with_config(Config { delete_enabled: true, ..Config::default() })
    }

    pub fn with_config(config: Config) -> Self {
        Self::over(MemoryObjects::new(), MemoryKv::new(), config)
    }

    /// A registry over these stores, counting their operations together.
    fn over(objects: MemoryObjects, kv: MemoryKv, config: Config) -> Self {
        let operations = Operations::new();
        let objects = objects.with_operations(operations.clone());
        let kv = kv.with_operations(operations.clone());
        let now = Rc::new(Cell::new(1_800_000_000));
        let registry = registry(&objects, &kv, config, &now, &None);
        Self { registry, objects, kv, now, operations, platform: None }
    }

    /// A registry on the platform model (see `wharf::storage::memory::Platform`), each request
    /// allowed `subrequests` subrequests: its first location.
    pub fn on_platform(config: Config, subrequests: usize) -> Self {
        Self::on_platform_with_faults(config, subrequests, &Faults::new())
    }

    /// [`TestRegistry::on_platform`], its stores sharing `faults`.
    pub fn on_platform_with_faults(config: Config, subrequests: usize, faults: &Faults) -> Self {
        let t = Self::with_faults(config, faults);
        let platform = Some(Platform::new(t.now.clone(), subrequests));
        let objects = t.objects.clone().on_platform(platform.as_ref().unwrap());
        let kv = t.kv.at_location(platform.as_ref().unwrap());
        let registry = registry(&objects, &kv, t.registry.config.clone(), &t.now, &platform);
        Self { registry, objects, kv, platform, ..t }
    }

    /// Another location of the platform this registry runs on: the same R2 and KV, but a KV
    /// cache and an isolate memory of its own.
    pub fn another_location(&self) -> Self {
        let kv = self.kv.at_location(self.platform.as_ref().expect("a registry on the platform model"));
        Self {
            registry: registry(&self.objects, &kv, self.registry.config.clone(), &self.now, &self.platform),
            objects: self.objects.clone(),
            kv,
            now: self.now.clone(),
            operations: self.operations.clone(),
            platform: self.platform.clone(),
        }
    }

    /// What the last request used of the platform's budgets.
    pub fn usage(&self) -> Usage {
        self.platform.as_ref().expect("a registry on the platform model").used()
    }

    /// Moves the clock on by `seconds`.
    pub fn wait(&self, seconds: u64) {
        self.now.set(self.now.get() + seconds);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            objects: self.objects.snapshot(),
            kv: self.kv.snapshot(),
            open_uploads: self.objects.open_multipart_uploads(),
        }
    }

    /// A registry whose stores share `faults` (see `wharf::storage::memory::Faults`).
    pub fn with_faults(config: Config, faults: &Faults) -> Self {
        Self::over(
            MemoryObjects::new().with_faults(faults.clone()),
            MemoryKv::new().with_faults(faults.clone()),
            config,
        )
    }

    /// Another registry, with its own configuration, over this one's storage and clock.
    pub fn sharing_storage(&self, config: Config) -> Self {
        Self {
            registry: registry(&self.objects, &self.kv, config, &self.now, &self.platform),
            objects: self.objects.clone(),
            kv: self.kv.clone(),
            now: self.now.clone(),
            operations: self.operations.clone(),
            platform: self.platform.clone(),
        }
    }

    /// A registry in pull-through cache mode in front of `upstream`.
    pub fn with_upstream(config: Config, upstream: FakeUpstream) -> Self {
        Self::with_config(config).rebuilt(|r| r.with_upstream(Box::new(upstream)))
    }

    /// A registry sending notifications through `notifier`.
    pub fn with_notifier(config: Config, notifier: Box<dyn wharf::registry::host::Notifier>) -> Self {
        Self::with_config(config).rebuilt(|r| r.with_notifier(notifier))
    }

    /// A registry deriving passwords through `derivation`, as the Worker does with WebCrypto.
    pub fn with_password_derivation(config: Config, derivation: wharf::registry::host::PasswordDerivation) -> Self {
        Self::with_config(config).rebuilt(|r| r.with_password_derivation(derivation))
    }

    /// The registry made again over the same storage, clock and configuration, then `finish`ed
    /// (host hooks are set when a registry is built).
    pub fn rebuilt(
        mut self,
        finish: impl FnOnce(Registry<MemoryObjects, MemoryKv>) -> Registry<MemoryObjects, MemoryKv>,
    ) -> Self {
        let config = self.registry.config.clone();
        self.registry = finish(registry(&self.objects, &self.kv, config, &self.now, &self.platform));
        self
    }

    /// Answers a request as a client on `origin` would see it, then runs the work left for
    /// after the response, as the Worker's waitUntil would.
    pub async fn respond(
        &self,
        origin: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: MemoryBody,
    ) -> TestResponse {
        let mut h = Headers::new();
        for (n, v) in headers {
            h.append(n, v);
        }
        let request = Request::new(method, path, h, body).with_origin(origin);
        if let Some(p) = &self.platform {
            p.begin_request();
        }
        let response = self.registry.handle(request).await;
        self.registry.run_background().await;
        let body = match response.body {
            Body::Empty => Vec::new(),
            Body::Bytes(b) | Body::Stream(b) => b,
        };
        TestResponse { status: response.status, headers: response.headers, body }
    }

    pub fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: MemoryBody) -> TestResponse {
        block_on(self.respond("https://registry.test", method, path, headers, body))
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        self.send(Method::Get, path, headers, MemoryBody::empty())
    }

    pub fn head(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        self.send(Method::Head, path, headers, MemoryBody::empty())
    }

    pub fn delete(&self, path: &str) -> TestResponse {
        self.send(Method::Delete, path, &[], MemoryBody::empty())
    }

    /// Monolithic blob upload; returns the digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let r = self.send(
            Method::Post,
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[],
            MemoryBody::from_bytes(bytes.to_vec()),
        );
        assert_eq!(r.status, 201, "blob push: {:?}", String::from_utf8_lossy(&r.body));
        d
    }

    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> TestResponse {
        self.send(
            Method::Put,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            MemoryBody::from_bytes(body.to_vec()),
        )
    }

    /// Pushes config + layers and an image manifest of `media_type` (OCI or Docker schema2)
    /// under `reference`; returns the manifest bytes and digest.
    pub fn push_image(&self, repo: &str, reference: &str, media_type: &str, seed: &str) -> (Vec<u8>, Digest) {
        let body = self.image_manifest(repo, media_type, seed);
        let r = self.put_manifest(repo, reference, media_type, &body);
        assert_eq!(r.status, 201, "manifest push: {:?}", String::from_utf8_lossy(&r.body));
        let d = Digest::sha256_of(&body);
        (body, d)
    }

    /// Pushes the blobs of an image and returns its manifest bytes, without pushing them.
    pub fn image_manifest(&self, repo: &str, media_type: &str, seed: &str) -> Vec<u8> {
        let (config_type, layer_type) = if media_type == DOCKER_MANIFEST {
            ("application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip")
        } else {
            ("application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip")
        };
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        let layer1 = format!("layer one of {seed}");
        let layer2 = format!("layer two of {seed}");
        let c = self.push_blob(repo, config.as_bytes());
        let l1 = self.push_blob(repo, layer1.as_bytes());
        let l2 = self.push_blob(repo, layer2.as_bytes());
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"{config_type}","digest":"{c}","size":{}}},"layers":[{{"mediaType":"{layer_type}","digest":"{l1}","size":{}}},{{"mediaType":"{layer_type}","digest":"{l2}","size":{}}}]}}"#,
            config.len(),
            layer1.len(),
            layer2.len()
        )
        .into_bytes()
    }
}

/// An upstream registry for a pull-through cache: another wharf over memory, reached at
/// [`FakeUpstream::ORIGIN`], that can be taken down, made to corrupt blobs, and asked what it
/// was sent.
#[derive(Clone)]
pub struct FakeUpstream {
    pub registry: Rc<TestRegistry>,
    pub down: Rc<Cell<bool>>,
    pub corrupt_blobs: Rc<Cell<bool>>,
    /// "METHOD path" of every request, with " auth" when it carried an Authorization.
    pub requests: Rc<RefCell<Vec<String>>>,
}

impl FakeUpstream {
    pub const ORIGIN: &str = "https://upstream.test";

    pub fn new(registry: TestRegistry) -> Self {
        Self { registry: Rc::new(registry), down: Rc::default(), corrupt_blobs: Rc::default(), requests: Rc::default() }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.borrow().clone()
    }
}

impl Upstream<MemoryObjects> for FakeUpstream {
    fn fetch(&self, request: UpstreamRequest) -> LocalBoxFuture<'_, Result<UpstreamResponse<MemoryBody>, String>> {
        Box::pin(async move {
            if self.down.get() {
                return Err("connection refused".into());
            }
            let auth = request.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
            let method = format!("{:?}", request.method).to_uppercase();
            // Paths on the upstream's origin, whole URLs elsewhere (which it does not answer).
            let target = request.url.strip_prefix(Self::ORIGIN).unwrap_or(&request.url);
            self.requests.borrow_mut().push(format!("{method} {target}{}", if auth { " auth" } else { "" }));
            let path =
                request.url.strip_prefix(Self::ORIGIN).ok_or_else(|| format!("unknown host: {}", request.url))?;
            let headers: Vec<(&str, &str)> = request.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let r = self.registry.respond(Self::ORIGIN, request.method, path, &headers, MemoryBody::empty()).await;
            let mut body = r.body;
            if self.corrupt_blobs.get() && path.contains("/blobs/") && !body.is_empty() {
                body[0] ^= 0xff;
            }
            let mut out = Headers::new();
            for (n, v) in &r.headers {
                out.append(n, v);
            }
            Ok(UpstreamResponse { status: r.status, headers: out, body: Some(MemoryBody::from_bytes(body)) })
        })
    }

    fn read(&self, body: MemoryBody, limit: usize) -> LocalBoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let bytes = body.into_bytes();
            if bytes.len() > limit { Err(format!("more than {limit} bytes")) } else { Ok(bytes) }
        })
    }

    fn tee(&self, body: MemoryBody, _length: u64) -> Result<(Vec<u8>, MemoryBody), String> {
        let bytes = body.into_bytes();
        Ok((bytes.clone(), MemoryBody::from_bytes(bytes)))
    }

    fn pass(&self, body: MemoryBody) -> Vec<u8> {
        body.into_bytes()
    }
}

/// A list or index body over the given (digest, size, media type, arch) children.
pub fn list_body(media_type: &str, children: &[(&Digest, usize, &str, &str)]) -> Vec<u8> {
    let manifests: Vec<String> = children
        .iter()
        .map(|(d, size, mt, arch)| {
            format!(r#"{{"mediaType":"{mt}","digest":"{d}","size":{size},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#)
        })
        .collect();
    format!(r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[{}]}}"#, manifests.join(",")).into_bytes()
}
