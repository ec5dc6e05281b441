// Crashes on workerd: the local server (and workerd) killed in the middle of a chunked upload and of
// a monolithic push, then started again on the same local state. Nothing half-written may be
// visible, the upload must resume where its last acknowledged chunk ended, and the retried
// push must succeed.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startWharf, request, sha256, OCI_MANIFEST } from "./harness.mjs";

const MiB = 1 << 20;
const state = mkdtempSync(join(tmpdir(), "wharf-restart-"));
let wharf;
after(async () => {
  await wharf?.stop();
  rmSync(state, { recursive: true, force: true });
});

/** Sends a body slowly (1 MiB every 20 ms), so that the server can be killed during it. */
function slowRequest(base, method, path, bytes, headers = {}) {
  const body = new ReadableStream({
    start() { this.offset = 0; },
    async pull(controller) {
      if (this.offset >= bytes.length) return controller.close();
      await new Promise((r) => setTimeout(r, 20));
      controller.enqueue(bytes.subarray(this.offset, this.offset + MiB));
      this.offset += MiB;
    },
  });
  return fetch(base + path, { method, body, headers, duplex: "half" }).then((r) => r.status, () => "broken");
}

test("an upload and a push cut off by a crash leave nothing half-written and can be finished", async () => {
  wharf = await startWharf({ state });
  const data = randomBytes(40 * MiB);
  const digest = sha256(data);
  const first = 8 * MiB;

  // A session with one acknowledged chunk, then a second chunk cut off by a crash.
  const start = await request(wharf.base, "POST", "/v2/crash/app/blobs/uploads/");
  const location = start.headers.get("location");
  const patch = await request(wharf.base, "PATCH", location, {
    headers: { "Content-Range": `0-${first - 1}`, "Content-Length": String(first) },
    body: data.subarray(0, first),
  });
  assert.equal(patch.status, 202);
  const cutPatch = slowRequest(wharf.base, "PATCH", location, data.subarray(first), { "Content-Range": `${first}-${data.length - 1}` });
  // And a monolithic push of another blob, cut off too.
  const other = randomBytes(24 * MiB);
  const cutPush = slowRequest(wharf.base, "POST", `/v2/crash/app/blobs/uploads/?digest=${sha256(other)}`, other);
  await new Promise((r) => setTimeout(r, 250));
  await wharf.kill();
  assert.equal(await cutPatch, "broken");
  assert.equal(await cutPush, "broken");

  wharf = await startWharf({ state });
  // Nothing is visible under either digest.
  for (const d of [digest, sha256(other)]) {
    assert.equal((await request(wharf.base, "HEAD", `/v2/crash/app/blobs/${d}`)).status, 404, d);
  }
  // The session stands where its last acknowledged chunk ended; the rest finishes it.
  const status = await request(wharf.base, "GET", location);
  assert.equal(status.status, 204);
  assert.equal(status.headers.get("range"), `0-${first - 1}`);
  const rest = await request(wharf.base, "PATCH", location, {
    headers: { "Content-Range": `${first}-${data.length - 1}` },
    body: data.subarray(first),
  });
  assert.equal(rest.status, 202);
  const done = await request(wharf.base, "PUT", `${location}?digest=${digest}`);
  assert.equal(done.status, 201);
  // The cut-off push, retried, succeeds.
  const retried = await request(wharf.base, "POST", `/v2/crash/app/blobs/uploads/?digest=${sha256(other)}`, { body: other });
  assert.equal(retried.status, 201);
  // Both are whole, and an image made of them can be pushed and pulled.
  for (const [d, bytes] of [[digest, data], [sha256(other), other]]) {
    const r = await request(wharf.base, "GET", `/v2/crash/app/blobs/${d}`);
    assert.equal(sha256(r.body), d);
    assert.equal(r.body.length, bytes.length);
  }
  const config = Buffer.from("{}");
  await request(wharf.base, "POST", `/v2/crash/app/blobs/uploads/?digest=${sha256(config)}`, { body: config });
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: 2 },
    layers: [digest, sha256(other)].map((d, i) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: d, size: [data, other][i].length })),
  }));
  const put = await request(wharf.base, "PUT", "/v2/crash/app/manifests/v1", { headers: { "Content-Type": OCI_MANIFEST }, body: manifest });
  assert.equal(put.status, 201);
  assert.ok((await request(wharf.base, "GET", "/v2/crash/app/manifests/v1", { headers: { Accept: OCI_MANIFEST } })).body.equals(manifest));
});
