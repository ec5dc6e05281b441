// Garbage collection on workerd: the admin endpoint (token, dry run, real run) and the cron
// trigger, after skopeo pushes; what is referenced still pulls byte for byte afterwards.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { startWharf, startTlsFront, request, run, sha256, ACCEPT_ALL } from "./harness.mjs";
import { Layout } from "./layout.mjs";

const TOKEN = randomBytes(24).toString("hex");
const admin = { Authorization: `Bearer ${TOKEN}` };
let wharf, front, layout, kept, dropped;
const tmp = mkdtempSync(join(tmpdir(), "wharf-gc-"));

before(async () => {
  // Grace period 0: whatever nothing references goes at once (the default is a day).
  wharf = await startWharf({
    vars: { WHARF_GC: "on", WHARF_GC_GRACE_SECONDS: "0", WHARF_ADMIN_TOKEN: TOKEN, WHARF_DELETE_ENABLED: "true" },
  });
  front = await startTlsFront(wharf.host);
  layout = new Layout(join(tmp, "layout"));
  kept = layout.image("amd64", [64 * 1024]);
  dropped = layout.image("arm64", [48 * 1024]);
  layout.tag("kept", kept);
  layout.tag("dropped", dropped);
  for (const name of ["kept", "dropped"]) {
    await run("skopeo", ["--insecure-policy", "copy", "--dest-tls-verify=false",
      `oci:${layout.dir}:${name}`, `docker://${front.host}/e2e/gc:${name}`]);
  }
});

after(() => {
  front?.stop();
  wharf?.stop();
});

const gc = (query = "", headers = admin) => request(wharf.base, "POST", `/_wharf/gc${query}`, { headers });
const blobStatus = async (d) => (await request(wharf.base, "HEAD", `/v2/e2e/gc/blobs/${d}`)).status;
const blobsOf = (image) => {
  const m = JSON.parse(layout.blobs.get(image.digest));
  return [m.config.digest, ...m.layers.map((l) => l.digest)];
};

async function assertPulls(tag, image) {
  const out = mkdtempSync(join(tmp, "pull-"));
  await run("skopeo", ["--insecure-policy", "copy", "--src-tls-verify=false",
    `docker://${front.host}/e2e/gc:${tag}`, `dir:${out}`]);
  const files = new Map(readdirSync(out).map((f) => [f, readFileSync(join(out, f))]));
  for (const d of blobsOf(image)) {
    assert.equal(sha256(files.get(d.slice("sha256:".length))), d, `${tag}: ${d}`);
  }
}

test("the admin endpoint needs the token", async () => {
  for (const headers of [{}, { Authorization: "Bearer wrong" }, { Authorization: TOKEN }]) {
    const r = await gc("", headers);
    assert.deepEqual([r.status, r.code()], [401, "UNAUTHORIZED"]);
  }
});

test("a dry run reports an unreferenced blob, a real run removes it, images still pull", async () => {
  const orphan = randomBytes(1000);
  const d = sha256(orphan);
  const up = await request(wharf.base, "POST", `/v2/e2e/gc/blobs/uploads/?digest=${d}`, { body: orphan });
  assert.equal(up.status, 201);
  // Older than the grace period of 0 s by a clear margin: workerd's clock advances only
  // between I/O, and the local R2 stamps objects with its own.
  await new Promise((r) => setTimeout(r, 1100));

  const dry = await gc();
  assert.equal(dry.status, 200);
  const report = dry.json();
  assert.equal(report.dryRun, true);
  assert.deepEqual(report.blobLinks, [`e2e/gc@${d}`]);
  assert.equal(report.bytesFreed, orphan.length);
  assert.equal(await blobStatus(d), 200, "a dry run removes nothing");

  const real = await gc("?dry-run=false");
  assert.equal(real.status, 200);
  assert.deepEqual(real.json().blobLinks, [`e2e/gc@${d}`]);
  assert.equal(await blobStatus(d), 404);
  await assertPulls("kept", kept);
  await assertPulls("dropped", dropped);
});

test("the cron trigger collects what a deleted image leaves", async () => {
  const del = await request(wharf.base, "DELETE", `/v2/e2e/gc/manifests/${dropped.digest}`);
  assert.equal(del.status, 202);
  for (const d of blobsOf(dropped)) assert.equal(await blobStatus(d), 200, "deleting a manifest keeps its blobs");
  await new Promise((r) => setTimeout(r, 10));
  const cron = await request(wharf.base, "GET", "/cdn-cgi/handler/scheduled?cron=17+*+*+*+*");
  assert.equal(cron.status, 200);
  for (const d of blobsOf(dropped)) assert.equal(await blobStatus(d), 404, `${d} collected`);
  const after = await gc();
  assert.deepEqual([after.json().blobLinks, after.json().blobs], [[], []], "nothing left to collect");
  const head = await request(wharf.base, "HEAD", "/v2/e2e/gc/manifests/kept", { headers: { Accept: ACCEPT_ALL } });
  assert.equal(head.status, 200);
  await assertPulls("kept", kept);
});
