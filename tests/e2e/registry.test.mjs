// The registry API over HTTP against the built Worker on workerd with real local R2 and KV:
// the storage contract suite on the real bindings, headers and statuses of the manifest, blob
// and upload endpoints, and the configuration modes.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { startWharf, request, sha256, OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, ACCEPT_ALL } from "./harness.mjs";

let wharf, defaults, readOnly, selftest;

before(async () => {
  wharf = await startWharf({ vars: { WHARF_DELETE_ENABLED: "true" } });
  // At log level "log", so that the Worker's console output (a panic's message) is in its log.
  selftest = await startWharf({ selftest: true, logLevel: "log" });
  defaults = await startWharf();
  readOnly = await startWharf({ vars: { WHARF_READ_ONLY: "true", WHARF_DELETE_ENABLED: "true" } });
});

after(() => {
  for (const w of [wharf, defaults, readOnly, selftest]) w?.stop();
});

const req = (method, path, opts) => request(wharf.base, method, path, opts);

async function pushBlob(base, repo, bytes) {
  const d = sha256(bytes);
  const r = await request(base, "POST", `/v2/${repo}/blobs/uploads/?digest=${d}`, { body: bytes });
  assert.equal(r.status, 201, r.body.toString());
  return { digest: d, size: bytes.length };
}

async function pushImage(base, repo, tag) {
  const config = await pushBlob(base, repo, Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", n: Math.random() })));
  const layer = await pushBlob(base, repo, randomBytes(1000));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer }],
  }));
  const r = await request(base, "PUT", `/v2/${repo}/manifests/${tag}`, { headers: { "Content-Type": OCI_MANIFEST }, body: manifest });
  assert.equal(r.status, 201, r.body.toString());
  return { manifest, digest: sha256(manifest) };
}

test("the storage contract suite passes on real R2 and KV", async () => {
  assert.equal((await req("POST", "/_wharf/selftest")).status, 404, "the release bundle has no self-test");
  const r = await request(selftest.base, "POST", "/_wharf/selftest");
  assert.equal(r.status, 200);
  const report = r.json();
  const cases = [...report.objects, ...report.kv];
  assert.ok(cases.length >= 9, `${cases.length} cases`);
  for (const c of cases) assert.equal(c.error, null, `${c.name}: ${c.error}`);
});

test("after a trap, the next request is served by a fresh wasm instance", async () => {
  // A 3 MiB chunk is less than a part: the session buffers it, in wasm memory.
  const data = randomBytes(3 << 20);
  const start = await request(selftest.base, "POST", "/v2/e2e/trap/blobs/uploads/");
  assert.equal(start.status, 202);
  const location = start.headers.get("location");
  assert.equal((await request(selftest.base, "PATCH", location, { body: data })).status, 202);
  const memory = async () => (await request(selftest.base, "GET", "/_wharf/selftest/memory")).json().wasmMemoryBytes;
  const grown = await memory();
  assert.ok(grown > 3 << 20, `wasm memory ${grown} bytes`);
  // A panic is a trap (panic=abort): workerd answers 500 once the request can no longer finish.
  assert.equal((await request(selftest.base, "POST", "/_wharf/selftest/trap")).status, 500);
  // console_error_panic_hook put the panic's message and location on console.error, which is
  // what `wrangler tail` and Workers Logs show.
  // wrangler prints the Worker's output as it comes (in colour): wait for it.
  const panicked = /panicked at [^\n]*src\/ops\/selftest\.rs:\d+:\d+:[\s\S]*self-test trap/;
  const log = () => selftest.log().replace(/\x1b\[[0-9;]*m/g, "");
  for (let i = 0; i < 50 && !panicked.test(log()); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(log(), panicked);
  const fresh = await memory();
  assert.ok(fresh < grown, `wasm memory ${fresh} bytes after the trap, ${grown} before: not a fresh instance`);
  // Nothing was lost: the session lives in R2, and the upload completes.
  assert.equal((await request(selftest.base, "PUT", `${location}?digest=${sha256(data)}`)).status, 201);
  assert.ok((await request(selftest.base, "GET", `/v2/e2e/trap/blobs/${sha256(data)}`)).body.equals(data));
});

test("an unreadable setting is logged, and every request is answered 500 UNKNOWN without it", async () => {
  const broken = await startWharf({ vars: { WHARF_GC: "sometimes" }, logLevel: "log", ready: [500] });
  try {
    const r = await request(broken.base, "GET", "/v2/");
    assert.deepEqual([r.status, r.code()], [500, "UNKNOWN"]);
    // What is wrong goes to the log, not to the client.
    assert.doesNotMatch(r.body.toString(), /WHARF_GC/);
    const logged = /"level":"error".*WHARF_GC: expected off, dry-run or on, got \\"sometimes\\"/;
    const log = () => broken.log().replace(/\x1b\[[0-9;]*m/g, "");
    for (let i = 0; i < 50 && !logged.test(log()); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(log(), logged);
  } finally {
    await broken.stop();
  }
});

test("GET /v2/ answers 200 with the API version header", async () => {
  const r = await req("GET", "/v2/");
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("docker-distribution-api-version"), "registry/2.0");
});

test("manifest GET and HEAD carry type, length, digest and ETag; HEAD has no body", async () => {
  const { manifest, digest } = await pushImage(wharf.base, "e2e/http/a/b", "v1");
  for (const method of ["GET", "HEAD"]) {
    for (const ref of ["v1", digest]) {
      const r = await req(method, `/v2/e2e/http/a/b/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } });
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("content-type"), OCI_MANIFEST);
      assert.equal(r.headers.get("content-length"), String(manifest.length));
      assert.equal(r.headers.get("docker-content-digest"), digest);
      assert.equal(r.headers.get("etag"), `"${digest}"`);
      if (method === "GET") assert.ok(r.body.equals(manifest));
      else assert.equal(r.body.length, 0);
    }
  }
  const notModified = await req("GET", "/v2/e2e/http/a/b/manifests/v1", { headers: { Accept: OCI_MANIFEST, "If-None-Match": `"${digest}"` } });
  assert.equal(notModified.status, 304);
});

test("an OCI manifest is not served to a client that does not accept it", async () => {
  await pushImage(wharf.base, "e2e/http/accept", "v1");
  const r = await req("GET", "/v2/e2e/http/accept/manifests/v1", { headers: { Accept: DOCKER_MANIFEST } });
  assert.equal(r.status, 404);
  assert.equal(r.json().errors[0].message, "OCI manifest found, but accept header does not support OCI manifests");
});

test("a manifest PUT checks digest, references, size and media type", async () => {
  const { manifest } = await pushImage(wharf.base, "e2e/http/put", "v1");
  const put = (ref, body, type = OCI_MANIFEST, repo = "e2e/http/put") =>
    req("PUT", `/v2/${repo}/manifests/${ref}`, { headers: { "Content-Type": type }, body });
  const wrongDigest = await put(sha256(Buffer.from("other")), manifest);
  assert.deepEqual([wrongDigest.status, wrongDigest.code()], [400, "DIGEST_INVALID"]);
  const elsewhere = await put("v1", manifest, OCI_MANIFEST, "e2e/http/elsewhere");
  assert.deepEqual([elsewhere.status, elsewhere.code()], [400, "MANIFEST_BLOB_UNKNOWN"]);
  const wrongType = await put("v2", manifest, OCI_INDEX);
  assert.deepEqual([wrongType.status, wrongType.code()], [400, "MANIFEST_INVALID"]);
  const big = Buffer.concat([manifest.subarray(0, -1), Buffer.from(`,"annotations":{"x":"${"x".repeat(4 << 20)}"}}`)]);
  const tooBig = await put("big", big);
  assert.deepEqual([tooBig.status, tooBig.code()], [413, "SIZE_INVALID"]);
  const badTag = await put("-x", manifest);
  assert.deepEqual([badTag.status, badTag.code()], [400, "TAG_INVALID"]);
  const badName = await put("v1", manifest, OCI_MANIFEST, "Bad");
  assert.deepEqual([badName.status, badName.code()], [400, "NAME_INVALID"]);
  for (const tag of ["v2", "big", "-x"]) {
    const r = await req("HEAD", `/v2/e2e/http/put/manifests/${tag}`, { headers: { Accept: ACCEPT_ALL } });
    // "-x" is no tag: it names no manifest.
    assert.equal(r.status, 404, tag);
  }
});

test("a reference that is neither tag nor digest is 404 MANIFEST_UNKNOWN to GET, HEAD and DELETE", async () => {
  const { manifest } = await pushImage(wharf.base, "e2e/http/invalid", "v1");
  for (const method of ["GET", "HEAD", "DELETE"]) {
    const r = await req(method, "/v2/e2e/http/invalid/manifests/.INVALID_MANIFEST_NAME", { headers: { Accept: ACCEPT_ALL } });
    assert.equal(r.status, 404, method);
    if (method !== "HEAD") assert.equal(r.code(), "MANIFEST_UNKNOWN", method);
  }
  const put = await req("PUT", "/v2/e2e/http/invalid/manifests/.INVALID_MANIFEST_NAME", { headers: { "Content-Type": OCI_MANIFEST }, body: manifest });
  assert.deepEqual([put.status, put.code()], [400, "TAG_INVALID"]);
});

test("a manifest pushed by a sha512 digest keeps it, with ?tag= too, on push, HEAD and GET", async () => {
  const { manifest } = await pushImage(wharf.base, "e2e/http/sha512", "first");
  const d512 = "sha512:" + createHash("sha512").update(manifest).digest("hex");
  const plain = await req("PUT", `/v2/e2e/http/sha512/manifests/${d512}`, { headers: { "Content-Type": OCI_MANIFEST }, body: manifest });
  assert.deepEqual([plain.status, plain.headers.get("docker-content-digest")], [201, d512]);
  const byDigest = await req("GET", `/v2/e2e/http/sha512/manifests/${d512}`, { headers: { Accept: OCI_MANIFEST } });
  assert.deepEqual([byDigest.status, byDigest.headers.get("docker-content-digest")], [200, d512]);
  assert.ok(byDigest.body.equals(manifest));
  const tagged = await req("PUT", `/v2/e2e/http/sha512/manifests/${d512}?tag=a&tag=b`, { headers: { "Content-Type": OCI_MANIFEST }, body: manifest });
  assert.deepEqual([tagged.status, tagged.headers.get("docker-content-digest")], [201, d512]);
  assert.equal(tagged.headers.get("location"), `/v2/e2e/http/sha512/manifests/${d512}`);
  // Each tag parameter is confirmed (the suite pushes the tags again by tag when it is not).
  assert.deepEqual(tagged.headers.get("oci-tag").split(",").map((t) => t.trim()), ["a", "b"]);
  for (const tag of ["a", "b"]) {
    for (const method of ["HEAD", "GET"]) {
      const r = await req(method, `/v2/e2e/http/sha512/manifests/${tag}`, { headers: { Accept: OCI_MANIFEST } });
      assert.deepEqual([r.status, r.headers.get("docker-content-digest")], [200, d512], `${method} ${tag}`);
      if (method === "GET") assert.ok(r.body.equals(manifest));
    }
  }
  // The tag the sha256 push set keeps sha256.
  const first = await req("HEAD", "/v2/e2e/http/sha512/manifests/first", { headers: { Accept: OCI_MANIFEST } });
  assert.equal(first.headers.get("docker-content-digest"), sha256(manifest));
});

test("a non-distributable layer with URLs needs no blob; the manifest is served and listed", async () => {
  const config = await pushBlob(wharf.base, "e2e/http/nondist", Buffer.from("{}"));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
    layers: [{
      mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
      digest: sha256(randomBytes(32)), size: 1440, urls: ["https://example.com/layer.tar.gz"],
    }],
  }));
  const put = await req("PUT", "/v2/e2e/http/nondist/manifests/nd", { headers: { "Content-Type": OCI_MANIFEST }, body: manifest });
  assert.equal(put.status, 201, put.body.toString());
  for (const ref of ["nd", sha256(manifest)]) {
    const r = await req("GET", `/v2/e2e/http/nondist/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } });
    assert.equal(r.status, 200, ref);
    assert.ok(r.body.equals(manifest), ref);
  }
  assert.deepEqual((await req("GET", "/v2/e2e/http/nondist/tags/list")).json().tags, ["nd"]);
  // A URL that is not http(s) is refused, and the tag is not set.
  const ftp = Buffer.from(manifest.toString().replace("https://example.com", "ftp://example.com"));
  const refused = await req("PUT", "/v2/e2e/http/nondist/manifests/ftp", { headers: { "Content-Type": OCI_MANIFEST }, body: ftp });
  assert.deepEqual([refused.status, refused.code()], [400, "MANIFEST_BLOB_UNKNOWN"]);
  assert.equal((await req("HEAD", "/v2/e2e/http/nondist/manifests/ftp", { headers: { Accept: OCI_MANIFEST } })).status, 404);
});

test("a push lacking several blobs learns of each one, and a descriptor's size must be its blob's", async () => {
  const repo = "e2e/http/missing";
  const layer = await pushBlob(wharf.base, repo, randomBytes(1440));
  const [c, l] = [sha256(Buffer.from("no config")), sha256(Buffer.from("no layer"))];
  const body = (layers) => Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: c, size: 9 },
    layers: layers.map((x) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...x })),
  }));
  const r = await req("PUT", `/v2/${repo}/manifests/v1`, {
    headers: { "Content-Type": OCI_MANIFEST },
    body: body([{ digest: l, size: 8 }, { digest: layer.digest, size: Number.MAX_SAFE_INTEGER }]),
  });
  assert.equal(r.status, 400);
  const errors = r.json().errors;
  assert.deepEqual(errors.map((e) => e.code), ["MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"]);
  assert.deepEqual([errors[0].detail, errors[1].detail], [c, l]);
  assert.deepEqual(errors[2].detail, { digest: layer.digest, size: Number.MAX_SAFE_INTEGER, blobSize: 1440 });
  assert.equal((await req("HEAD", `/v2/${repo}/manifests/v1`, { headers: { Accept: OCI_MANIFEST } })).status, 404);
});

test("a blob upload in uneven chunks crosses R2 multipart parts and verifies its digest", async () => {
  const data = randomBytes(11 * 1024 * 1024 + 123);
  const start = await req("POST", "/v2/e2e/http/chunks/blobs/uploads/");
  assert.equal(start.status, 202);
  assert.equal(start.headers.get("range"), "0-0");
  const location = start.headers.get("location");
  const cuts = [0, 3 << 20, 9 << 20, data.length];
  for (let i = 0; i + 1 < cuts.length; i++) {
    const r = await req("PATCH", location, {
      headers: { "Content-Range": `${cuts[i]}-${cuts[i + 1] - 1}`, "Content-Type": "application/octet-stream" },
      body: data.subarray(cuts[i], cuts[i + 1]),
    });
    assert.equal(r.status, 202, r.body.toString());
    assert.equal(r.headers.get("range"), `0-${cuts[i + 1] - 1}`);
  }
  const outOfOrder = await req("PATCH", location, { headers: { "Content-Range": "0-9" }, body: data.subarray(0, 10) });
  assert.deepEqual([outOfOrder.status, outOfOrder.code()], [416, "RANGE_INVALID"]);
  const status = await req("GET", location);
  assert.deepEqual([status.status, status.headers.get("range")], [204, `0-${data.length - 1}`]);
  const d = sha256(data);
  assert.equal((await req("HEAD", `/v2/e2e/http/chunks/blobs/${d}`)).status, 404, "invisible before the final PUT");
  const done = await req("PUT", `${location}?digest=${d}`);
  assert.equal(done.status, 201);
  const got = await req("GET", `/v2/e2e/http/chunks/blobs/${d}`, { headers: { "Accept-Encoding": "gzip" } });
  assert.equal(got.status, 200);
  assert.equal(got.headers.get("content-type"), "application/octet-stream");
  assert.equal(got.headers.get("content-encoding"), null, "blobs are not recompressed");
  assert.equal(got.headers.get("content-length"), String(data.length));
  assert.ok(got.body.equals(data));
});

test("a digest mismatch leaves nothing under either digest, and a cancelled session is gone", async () => {
  const data = randomBytes(6 * 1024 * 1024);
  const start = await req("POST", "/v2/e2e/http/bad/blobs/uploads/");
  const location = start.headers.get("location");
  assert.equal((await req("PATCH", location, { body: data })).status, 202);
  const claimed = sha256(Buffer.from("claimed"));
  const r = await req("PUT", `${location}?digest=${claimed}`);
  assert.deepEqual([r.status, r.code()], [400, "DIGEST_INVALID"]);
  for (const d of [claimed, sha256(data)]) assert.equal((await req("HEAD", `/v2/e2e/http/bad/blobs/${d}`)).status, 404);
  const mono = await req("POST", `/v2/e2e/http/bad/blobs/uploads/?digest=${claimed}`, { body: Buffer.from("not it") });
  assert.deepEqual([mono.status, mono.code()], [400, "DIGEST_INVALID"]);
  assert.equal((await req("HEAD", `/v2/e2e/http/bad/blobs/${claimed}`)).status, 404);

  const s = await req("POST", "/v2/e2e/http/bad/blobs/uploads/");
  assert.equal((await req("DELETE", s.headers.get("location"))).status, 204);
  const gone = await req("GET", s.headers.get("location"));
  assert.deepEqual([gone.status, gone.code()], [404, "BLOB_UPLOAD_UNKNOWN"]);
});

test("blob HEAD gives the length; unknown blobs are BLOB_UNKNOWN", async () => {
  const { digest } = await pushBlob(wharf.base, "e2e/http/blob", Buffer.from("twelve bytes"));
  const head = await req("HEAD", `/v2/e2e/http/blob/blobs/${digest}`);
  assert.deepEqual([head.status, head.headers.get("content-length"), head.headers.get("docker-content-digest")], [200, "12", digest]);
  const unknown = await req("GET", `/v2/e2e/http/blob/blobs/${sha256(Buffer.from("nope"))}`);
  assert.deepEqual([unknown.status, unknown.code()], [404, "BLOB_UNKNOWN"]);
});

test("deletes by tag and by digest", async () => {
  const { digest } = await pushImage(wharf.base, "e2e/http/del", "v1");
  const again = await req("GET", `/v2/e2e/http/del/manifests/${digest}`, { headers: { Accept: OCI_MANIFEST } });
  await req("PUT", "/v2/e2e/http/del/manifests/v2", { headers: { "Content-Type": OCI_MANIFEST }, body: again.body });
  assert.equal((await req("DELETE", "/v2/e2e/http/del/manifests/v1")).status, 202);
  assert.equal((await req("HEAD", "/v2/e2e/http/del/manifests/v1", { headers: { Accept: OCI_MANIFEST } })).status, 404);
  assert.equal((await req("DELETE", `/v2/e2e/http/del/manifests/${digest}`)).status, 202);
  for (const ref of ["v2", digest]) {
    assert.equal((await req("HEAD", `/v2/e2e/http/del/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } })).status, 404, ref);
  }
  const unknown = await req("DELETE", "/v2/e2e/http/del/manifests/nope");
  assert.deepEqual([unknown.status, unknown.code()], [404, "MANIFEST_UNKNOWN"]);
});

test("with the default configuration deletes are UNSUPPORTED and change nothing", async () => {
  const { digest } = await pushImage(defaults.base, "e2e/http/keep", "v1");
  for (const ref of ["v1", digest]) {
    const r = await request(defaults.base, "DELETE", `/v2/e2e/http/keep/manifests/${ref}`);
    assert.deepEqual([r.status, r.code()], [405, "UNSUPPORTED"]);
  }
  const still = await request(defaults.base, "HEAD", "/v2/e2e/http/keep/manifests/v1", { headers: { Accept: OCI_MANIFEST } });
  assert.equal(still.headers.get("docker-content-digest"), digest);
});

test("a read-only registry refuses every write with 405 UNSUPPORTED", async () => {
  const attempts = [
    ["POST", "/v2/e2e/ro/blobs/uploads/"],
    ["PUT", "/v2/e2e/ro/manifests/v1"],
    ["DELETE", "/v2/e2e/ro/manifests/v1"],
    ["PATCH", `/v2/e2e/ro/blobs/uploads/${"0".repeat(32)}`],
  ];
  for (const [method, path] of attempts) {
    const r = await request(readOnly.base, method, path, { headers: { "Content-Type": OCI_MANIFEST }, body: "{}" });
    assert.deepEqual([r.status, r.code()], [405, "UNSUPPORTED"], `${method} ${path}`);
  }
  assert.equal((await request(readOnly.base, "GET", "/v2/")).status, 200);
});
