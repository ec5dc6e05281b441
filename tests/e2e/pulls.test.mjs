// Pulls on workerd as caches see them: Cache-Control by kind of reference, 304 revalidation,
// HEAD by tag, blobs kept by the location's cache (Cache API) and ranged reads answered from
// it, and blobs never recompressed for gzip-accepting clients.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { startWharf, request, sha256, OCI_MANIFEST } from "./harness.mjs";

let wharf, blob, blobDigest, manifest, manifestDigest;

before(async () => {
  wharf = await startWharf();
  blob = randomBytes(300_000);
  blobDigest = sha256(blob);
  const push = await request(wharf.base, "POST", `/v2/pulls/app/blobs/uploads/?digest=${blobDigest}`, { body: blob });
  assert.equal(push.status, 201);
  const config = Buffer.from("{}");
  await request(wharf.base, "POST", `/v2/pulls/app/blobs/uploads/?digest=${sha256(config)}`, { body: config });
  manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: blobDigest, size: blob.length }],
  }));
  manifestDigest = sha256(manifest);
  const put = await request(wharf.base, "PUT", "/v2/pulls/app/manifests/v1", { headers: { "Content-Type": OCI_MANIFEST }, body: manifest });
  assert.equal(put.status, 201);
});

after(() => wharf?.stop());

const accept = { Accept: OCI_MANIFEST };

test("content by digest is immutable to caches, tags are revalidated with a 304", async () => {
  const byDigest = await request(wharf.base, "GET", `/v2/pulls/app/manifests/${manifestDigest}`, { headers: accept });
  assert.equal(byDigest.headers.get("cache-control"), "public, max-age=31536000, immutable");
  const byTag = await request(wharf.base, "GET", "/v2/pulls/app/manifests/v1", { headers: accept });
  assert.equal(byTag.headers.get("cache-control"), "public, no-cache");
  assert.ok(byTag.body.equals(manifest));
  const etag = byTag.headers.get("etag");
  assert.equal(etag, `"${manifestDigest}"`);
  const again = await request(wharf.base, "GET", "/v2/pulls/app/manifests/v1", { headers: { ...accept, "If-None-Match": etag } });
  assert.deepEqual([again.status, again.body.length], [304, 0]);
  const head = await request(wharf.base, "HEAD", "/v2/pulls/app/manifests/v1", { headers: accept });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-length"), String(manifest.length));
  assert.equal(head.headers.get("docker-content-digest"), manifestDigest);
  const blobAgain = await request(wharf.base, "GET", `/v2/pulls/app/blobs/${blobDigest}`, { headers: { "If-None-Match": `"${blobDigest}"` } });
  assert.equal(blobAgain.status, 304);
  const missing = await request(wharf.base, "GET", "/v2/pulls/app/manifests/nope", { headers: accept });
  assert.deepEqual([missing.status, missing.headers.get("cache-control")], [404, "no-store"]);
});

test("a blob read once is kept by the location's cache, which then answers ranges", async () => {
  const first = await request(wharf.base, "GET", `/v2/pulls/app/blobs/${blobDigest}`);
  assert.equal(sha256(first.body), blobDigest);
  // The Cache API stores after the response (waitUntil); locally its entries are files of
  // the local state.
  const dir = join(wharf.state, "v3", "cache", "default", "blobs");
  const cached = () => existsSync(dir) && readdirSync(dir).some((f) => readFileSync(join(dir, f)).equals(blob));
  for (let i = 0; !cached(); i++) {
    assert.ok(i < 50, "the blob never reached the cache");
    await new Promise((r) => setTimeout(r, 100));
  }
  const range = await request(wharf.base, "GET", `/v2/pulls/app/blobs/${blobDigest}`, { headers: { Range: "bytes=100-199" } });
  assert.equal(range.status, 206);
  assert.equal(range.headers.get("content-range"), `bytes 100-199/${blob.length}`);
  assert.ok(range.body.equals(blob.subarray(100, 200)));
  const whole = await request(wharf.base, "GET", `/v2/pulls/app/blobs/${blobDigest}`);
  assert.equal(sha256(whole.body), blobDigest);
});

test("blobs are not recompressed for clients that accept gzip", async () => {
  const r = await fetch(`${wharf.base}/v2/pulls/app/blobs/${blobDigest}`, { headers: { "Accept-Encoding": "gzip" } });
  const body = Buffer.from(await r.arrayBuffer());
  assert.equal(r.headers.get("content-encoding"), null);
  assert.equal(r.headers.get("content-length"), String(blob.length));
  assert.equal(r.headers.get("content-type"), "application/octet-stream");
  assert.equal(sha256(body), blobDigest);
});
