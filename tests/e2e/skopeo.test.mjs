// Round trips with skopeo against the Worker on workerd: an OCI image of two layers (one over
// a multipart part), an OCI index of two platforms, the same as Docker schema2 and a Docker
// manifest list (--format v2s2); each pulled back byte for byte, then deleted.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startWharf, startTlsFront, request, run, sha256, ACCEPT_ALL, DOCKER_MANIFEST, DOCKER_LIST } from "./harness.mjs";
import { Layout } from "./layout.mjs";

let wharf, front, layout, image, index;
const tmp = mkdtempSync(join(tmpdir(), "wharf-skopeo-"));

before(async () => {
  wharf = await startWharf({ vars: { WHARF_DELETE_ENABLED: "true" } });
  front = await startTlsFront(wharf.host);
  layout = new Layout(join(tmp, "layout"));
  image = layout.image("amd64", [64 * 1024, 6 * 1024 * 1024]);
  layout.tag("image", image);
  index = layout.index([image, layout.image("arm64", [32 * 1024])]);
  layout.tag("multi", index);
});

after(() => {
  front?.stop();
  wharf?.stop();
});

const skopeo = (...args) => run("skopeo", ["--insecure-policy", ...args]);
const push = (src, repo, ...flags) =>
  skopeo("copy", "--dest-tls-verify=false", ...flags, `oci:${layout.dir}:${src}`, `docker://${front.host}/${repo}:v1`);

/** Pulls with the dir: transport, which keeps manifests byte for byte. */
async function pull(repo, ...flags) {
  const out = mkdtempSync(join(tmp, "pull-"));
  await skopeo("copy", "--src-tls-verify=false", ...flags, `docker://${front.host}/${repo}:v1`, `dir:${out}`);
  const files = new Map(readdirSync(out).map((f) => [f, readFileSync(join(out, f))]));
  return files;
}

function assertBlobsPulled(files, manifestBytes) {
  const m = JSON.parse(manifestBytes);
  for (const d of [m.config, ...m.layers]) {
    const got = files.get(d.digest.slice("sha256:".length));
    assert.ok(got, `blob ${d.digest} pulled`);
    assert.equal(sha256(got), d.digest);
    assert.ok(layout.blobs.get(d.digest).equals(got), `blob ${d.digest} identical to the pushed one`);
  }
}

async function deleteAndCheck(repo) {
  const head = await request(wharf.base, "HEAD", `/v2/${repo}/manifests/v1`, { headers: { Accept: ACCEPT_ALL } });
  assert.equal(head.status, 200);
  const digest = head.headers.get("docker-content-digest");
  await skopeo("delete", "--tls-verify=false", `docker://${front.host}/${repo}:v1`);
  for (const ref of ["v1", digest]) {
    const r = await request(wharf.base, "GET", `/v2/${repo}/manifests/${ref}`, { headers: { Accept: ACCEPT_ALL } });
    assert.equal(r.status, 404, `${repo}:${ref} after delete`);
    assert.equal(r.code(), "MANIFEST_UNKNOWN");
  }
}

test("skopeo pushes and pulls an OCI image of two layers byte for byte, then deletes it", async () => {
  await push("image", "e2e/skopeo/oci");
  const files = await pull("e2e/skopeo/oci");
  const pushed = layout.blobs.get(image.digest);
  assert.ok(files.get("manifest.json").equals(pushed), "manifest identical");
  assertBlobsPulled(files, pushed);
  await deleteAndCheck("e2e/skopeo/oci");
});

test("skopeo pushes and pulls an OCI index of two platforms byte for byte", async () => {
  await push("multi", "e2e/skopeo/index", "--all");
  const files = await pull("e2e/skopeo/index", "--all");
  assert.ok(files.get("manifest.json").equals(layout.blobs.get(index.digest)), "index identical");
  const children = JSON.parse(layout.blobs.get(index.digest)).manifests;
  for (const child of children) {
    const got = files.get(`${child.digest.slice("sha256:".length)}.manifest.json`);
    assert.ok(got && got.equals(layout.blobs.get(child.digest)), `child ${child.digest} identical`);
    assertBlobsPulled(files, got);
  }
  await deleteAndCheck("e2e/skopeo/index");
});

test("skopeo pushes a Docker schema2 image (--format v2s2) and pulls it back identically", async () => {
  await push("image", "e2e/skopeo/v2s2", "--format", "v2s2");
  const served = await request(wharf.base, "GET", "/v2/e2e/skopeo/v2s2/manifests/v1", { headers: { Accept: DOCKER_MANIFEST } });
  assert.equal(served.status, 200);
  assert.equal(served.headers.get("content-type"), DOCKER_MANIFEST);
  assert.equal(served.headers.get("docker-content-digest"), sha256(served.body));
  const files = await pull("e2e/skopeo/v2s2");
  assert.ok(files.get("manifest.json").equals(served.body), "manifest pulled as stored");
  assertBlobsPulled(files, served.body);
  await deleteAndCheck("e2e/skopeo/v2s2");
});

test("skopeo pushes a Docker manifest list (--all --format v2s2) and pulls it back identically", async () => {
  await push("multi", "e2e/skopeo/list", "--all", "--format", "v2s2");
  const served = await request(wharf.base, "GET", "/v2/e2e/skopeo/list/manifests/v1", { headers: { Accept: ACCEPT_ALL } });
  assert.equal(served.headers.get("content-type"), DOCKER_LIST);
  const files = await pull("e2e/skopeo/list", "--all");
  assert.ok(files.get("manifest.json").equals(served.body), "list pulled as stored");
  for (const child of JSON.parse(served.body).manifests) {
    const got = files.get(`${child.digest.slice("sha256:".length)}.manifest.json`);
    assert.ok(got, `child ${child.digest} pulled`);
    assert.equal(sha256(got), child.digest);
    assertBlobsPulled(files, got);
  }
  // A client that only understands schema2 gets the linux/amd64 image by tag.
  const amd64 = JSON.parse(served.body).manifests.find((m) => m.platform.architecture === "amd64");
  const rewritten = await request(wharf.base, "GET", "/v2/e2e/skopeo/list/manifests/v1", { headers: { Accept: DOCKER_MANIFEST } });
  assert.equal(rewritten.headers.get("docker-content-digest"), amd64.digest);
  assert.equal(sha256(rewritten.body), amd64.digest);
  await deleteAndCheck("e2e/skopeo/list");
});
