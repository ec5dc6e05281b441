// Garbage collection on workerd: the admin endpoint (token, dry run, real run) and the cron
// trigger, after skopeo pushes; what is referenced still pulls byte for byte afterwards. A run
// goes in steps, each a message of the local GC queue, as on Cloudflare.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { startWharf, startTlsFront, request, run, sha256, ACCEPT_ALL, OCI_MANIFEST } from "./harness.mjs";
import { Layout } from "./layout.mjs";

const TOKEN = randomBytes(24).toString("hex");
const admin = { Authorization: `Bearer ${TOKEN}` };
let wharf, front, layout, kept, dropped;
const tmp = mkdtempSync(join(tmpdir(), "wharf-gc-"));

before(async () => {
  // Grace period 0: whatever nothing references goes at once (the default is a day).
  wharf = await startWharf({
    vars: {
      WHARF_GC: "on", WHARF_GC_GRACE_SECONDS: "0", WHARF_ADMIN_TOKEN: TOKEN, WHARF_DELETE_ENABLED: "true",
      WHARF_LOG_LEVEL: "info",
      WHARF_RETENTION: JSON.stringify([{ repositories: "e2e/retained", tags: "pr-*", keepLast: 1 }]),
    },
    logLevel: "info",
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

/** The run at `path` once done: its steps go on in the queue meanwhile (202). */
async function finished(path) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = await request(wharf.base, "GET", path, { headers: admin });
    assert.ok([200, 202].includes(r.status), `${path}: ${r.status} ${r.body}`);
    if (r.status === 200) return r.json();
    assert.ok(Date.now() < deadline, `${path}: not done in 60 s: ${r.body}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Starts a run and waits for it to end: its final state, with the report. */
async function collect(query = "") {
  const r = await gc(query);
  assert.equal(r.status, 202, `the run goes on in the queue: ${r.body}`);
  const { id } = r.json();
  assert.equal(r.headers.get("location"), `/_wharf/gc/${id}`);
  const run = await finished(`/_wharf/gc/${id}`);
  assert.equal(run.id, id);
  return run;
}
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
    const get = await request(wharf.base, "GET", "/_wharf/gc", { headers });
    assert.deepEqual([get.status, get.code()], [401, "UNAUTHORIZED"]);
  }
});

test("while a run goes on, another is not started: the answer names the running one", async () => {
  // The steps wait for the queue's batches (a second each here), so the first is still going.
  const first = await gc();
  const second = await gc("?dry-run=false");
  assert.deepEqual([first.status, second.status], [202, 202]);
  assert.equal(second.json().id, first.json().id);
  assert.equal(second.json().dryRun, true, "the running dry run, not a real one");
  const run = await finished(`/_wharf/gc/${first.json().id}`);
  assert.equal(run.phase.name, "done");
});

test("a dry run reports an unreferenced blob, a real run removes it, images still pull", async () => {
  const orphan = randomBytes(1000);
  const d = sha256(orphan);
  const up = await request(wharf.base, "POST", `/v2/e2e/gc/blobs/uploads/?digest=${d}`, { body: orphan });
  assert.equal(up.status, 201);
  // Older than the grace period of 0 s by a clear margin: workerd's clock advances only
  // between I/O, and the local R2 stamps objects with its own.
  await new Promise((r) => setTimeout(r, 1100));

  const dry = await collect();
  const report = dry.report;
  assert.equal(report.dryRun, true);
  assert.deepEqual(report.blobLinks, [`e2e/gc@${d}`]);
  assert.deepEqual(report.blobs.map((b) => b.size), [orphan.length]);
  assert.equal(report.bytesFreed, orphan.length);
  assert.equal(await blobStatus(d), 200, "a dry run removes nothing");

  const real = await collect("?dry-run=false");
  assert.deepEqual(real.report.blobLinks, [`e2e/gc@${d}`]);
  assert.equal(real.report.bytesFreed, orphan.length);
  assert.equal(await blobStatus(d), 404);
  // One JSON line per step, with its operations, within the step's budget.
  const steps = wharf.log().split("\n").filter((l) => l.includes('"gc step"') && l.includes(real.id))
    .map((l) => JSON.parse(l.slice(l.indexOf("{"))));
  assert.equal(steps.length, real.steps, wharf.log());
  assert.deepEqual(steps.map((s) => s.phase), ["start", "repositories", "sweeps", "bytes"]);
  assert.ok(steps.every((s) => s.level === "info" && s.operations > 0 && s.operations <= 1000), JSON.stringify(steps));
  assert.equal(Math.max(...steps.map((s) => s.operations)), real.maxStepOperations);
  assert.equal(steps.at(-1).done, true);
  await assertPulls("kept", kept);
  await assertPulls("dropped", dropped);
});

test("the cron trigger collects what a deleted image leaves", async () => {
  const del = await request(wharf.base, "DELETE", `/v2/e2e/gc/manifests/${dropped.digest}`);
  assert.equal(del.status, 202);
  for (const d of blobsOf(dropped)) assert.equal(await blobStatus(d), 200, "deleting a manifest keeps its blobs");
  await new Promise((r) => setTimeout(r, 10));
  const last = (await finished("/_wharf/gc")).id;
  const cron = await request(wharf.base, "GET", "/cdn-cgi/handler/scheduled?cron=17+*+*+*+*");
  assert.equal(cron.status, 200);
  const run = await finished("/_wharf/gc");
  assert.notEqual(run.id, last, "the cron started a run");
  assert.equal(run.dryRun, false);
  for (const d of blobsOf(dropped)) assert.equal(await blobStatus(d), 404, `${d} collected`);
  const after = (await collect()).report;
  assert.deepEqual([after.blobLinks, after.blobs], [[], []], "nothing left to collect");
  const head = await request(wharf.base, "HEAD", "/v2/e2e/gc/manifests/kept", { headers: { Accept: ACCEPT_ALL } });
  assert.equal(head.status, 200);
  await assertPulls("kept", kept);
});

/** Pushes a one-layer image to e2e/retained under `tag`; its digest. */
async function pushRetained(tag) {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", tag }));
  const layer = randomBytes(512);
  for (const blob of [config, layer]) {
    const r = await request(wharf.base, "POST", `/v2/e2e/retained/blobs/uploads/?digest=${sha256(blob)}`, { body: blob });
    assert.equal(r.status, 201);
  }
  const manifest = JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha256(layer), size: layer.length }],
  });
  const put = await request(wharf.base, "PUT", `/v2/e2e/retained/manifests/${tag}`, {
    headers: { "Content-Type": OCI_MANIFEST }, body: manifest,
  });
  assert.equal(put.status, 201);
  return sha256(Buffer.from(manifest));
}

test("retention untags all but the newest pr- tag, and the run collects what that frees", async () => {
  const old = await pushRetained("pr-1");
  await new Promise((r) => setTimeout(r, 50));
  await pushRetained("pr-2");
  await pushRetained("main");
  await new Promise((r) => setTimeout(r, 1100));
  const status = async (ref) =>
    (await request(wharf.base, "HEAD", `/v2/e2e/retained/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } })).status;

  const dry = (await collect()).report;
  assert.deepEqual(dry.untagged, ["e2e/retained:pr-1"]);
  assert.deepEqual(dry.manifests, [`e2e/retained@${old}`]);
  assert.equal(await status("pr-1"), 200, "a dry run removes nothing");

  const real = (await collect("?dry-run=false")).report;
  assert.deepEqual([real.untagged, real.manifests], [dry.untagged, dry.manifests]);
  assert.equal(real.blobLinks.length, 2, "its config and layer");
  assert.deepEqual([await status("pr-1"), await status(old), await status("pr-2"), await status("main")], [404, 404, 200, 200]);
});
