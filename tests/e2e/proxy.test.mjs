// Pull-through cache mode on workerd: a private wharf as the upstream (its token flow run by
// the cache with the configured credentials), a cache wharf in front of it, skopeo pulling an
// image through the cache, then again with the upstream stopped; writes to the cache refused.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startWharf, startTlsFront, request, run, sha256, ACCEPT_ALL, OCI_MANIFEST } from "./harness.mjs";
import { Layout } from "./layout.mjs";

let upstream, cache, front, layout, image, big;
const tmp = mkdtempSync(join(tmpdir(), "wharf-proxy-"));
const basic = (user, pw) => "Basic " + Buffer.from(`${user}:${pw}`).toString("base64");
const ALICE = basic("alice", "alice-pw");

before(async () => {
  const hash = async (pw) => (await run("node", [join(import.meta.dirname, "..", "..", "scripts", "hash-password.mjs"), pw])).trim();
  upstream = await startWharf({
    vars: {
      WHARF_RULES: JSON.stringify([{ repositories: "lib/*", users: { alice: ["pull", "push"], mirror: ["pull"] } }]),
      WHARF_USERS: JSON.stringify({ alice: await hash("alice-pw"), mirror: await hash("mirror-pw") }),
      WHARF_TOKEN_SECRET: "an upstream token secret of forty chars!",
    },
  });
  cache = await startWharf({
    vars: {
      WHARF_UPSTREAM: upstream.base,
      WHARF_UPSTREAM_USERNAME: "mirror",
      WHARF_UPSTREAM_PASSWORD: "mirror-pw",
      // Every tag request asks the upstream, so the second pull meets the stopped upstream.
      WHARF_UPSTREAM_TAG_TTL_SECONDS: "0",
    },
  });
  front = await startTlsFront(cache.host);
  layout = new Layout(join(tmp, "layout"));
  image = layout.image("amd64", [64 * 1024, 6 * 1024 * 1024]);
  layout.tag("image", image);
  // A layer above 32 MiB: the cache stores it (verified) before serving it.
  big = layout.image("amd64", [40 * 1024 * 1024]);
});

after(async () => {
  front?.stop();
  await Promise.all([upstream?.stop(), cache?.stop()]);
});

/** Pushes one of the layout's images to the upstream as alice, with Basic credentials on each request. */
async function pushUpstream(repo, tag, img) {
  const manifest = layout.blobs.get(img.digest);
  const m = JSON.parse(manifest);
  for (const d of [m.config, ...m.layers]) {
    const r = await request(upstream.base, "POST", `/v2/${repo}/blobs/uploads/?digest=${d.digest}`, {
      headers: { Authorization: ALICE, "Content-Type": "application/octet-stream" },
      body: layout.blobs.get(d.digest),
    });
    assert.equal(r.status, 201, `blob push: ${r.body}`);
  }
  const r = await request(upstream.base, "PUT", `/v2/${repo}/manifests/${tag}`, {
    headers: { Authorization: ALICE, "Content-Type": OCI_MANIFEST },
    body: manifest,
  });
  assert.equal(r.status, 201, `manifest push: ${r.body}`);
  return m;
}

/** Pulls through the cache with skopeo's dir: transport; checks every byte. */
async function pullAndCheck(repo, tag, img) {
  const manifest = JSON.parse(layout.blobs.get(img.digest));
  const out = mkdtempSync(join(tmp, "pull-"));
  await run("skopeo", ["--insecure-policy", "copy", "--src-tls-verify=false", `docker://${front.host}/${repo}:${tag}`, `dir:${out}`]);
  const files = new Map(readdirSync(out).map((f) => [f, readFileSync(join(out, f))]));
  assert.ok(files.get("manifest.json").equals(layout.blobs.get(img.digest)), "manifest identical to the upstream's");
  for (const d of [manifest.config, ...manifest.layers]) {
    const got = files.get(d.digest.slice("sha256:".length));
    assert.ok(got && sha256(got) === d.digest, `blob ${d.digest} pulled intact`);
  }
}

test("skopeo pulls through the cache, then again with the upstream stopped", async () => {
  const manifest = await pushUpstream("lib/app", "v1", image);
  await pushUpstream("lib/big", "v1", big);
  // The upstream is private: anonymous pulls there are refused, so the cache must run its
  // token flow with the mirror's credentials.
  const anonymous = await request(upstream.base, "GET", "/v2/lib/app/manifests/v1", { headers: { Accept: ACCEPT_ALL } });
  assert.equal(anonymous.status, 401);

  await pullAndCheck("lib/app", "v1", image);
  await pullAndCheck("lib/big", "v1", big);

  await upstream.stop();
  // Blobs are stored after the response (waitUntil): wait until each is served from the cache,
  // which now can only answer from its own storage.
  for (const d of [manifest.config, ...manifest.layers]) {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const r = await request(cache.base, "HEAD", `/v2/lib/app/blobs/${d.digest}`);
      if (r.status === 200) break;
      assert.equal(r.status, 502, "an uncached blob with the upstream down");
      assert.ok(Date.now() < deadline, `blob ${d.digest} never stored`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  await pullAndCheck("lib/app", "v1", image);
  await pullAndCheck("lib/big", "v1", big);
  const byDigest = await request(cache.base, "GET", `/v2/lib/app/manifests/${image.digest}`, { headers: { Accept: ACCEPT_ALL } });
  assert.equal(byDigest.status, 200);
  // What was never pulled is not there, and the answer says why.
  const other = await request(cache.base, "GET", "/v2/lib/other/manifests/v1", { headers: { Accept: ACCEPT_ALL } });
  assert.deepEqual([other.status, other.code()], [502, "UNKNOWN"]);
});

test("the cache refuses pushes and deletes", async () => {
  for (const [method, path] of [
    ["POST", "/v2/lib/app/blobs/uploads/"],
    ["PUT", "/v2/lib/app/manifests/v2"],
    ["DELETE", `/v2/lib/app/manifests/${image.digest}`],
  ]) {
    const r = await request(cache.base, method, path, { headers: { "Content-Type": OCI_MANIFEST }, body: method === "PUT" ? "{}" : undefined });
    assert.deepEqual([r.status, r.code()], [405, "UNSUPPORTED"], `${method} ${path}`);
  }
  await assert.rejects(
    run("skopeo", ["--insecure-policy", "copy", "--dest-tls-verify=false", `oci:${layout.dir}:image`, `docker://${front.host}/lib/app:v2`]),
    /405|unsupported|pull-through cache/i,
  );
});
