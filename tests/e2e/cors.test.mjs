// Browser UIs on other origins (WHARF_CORS_ORIGINS) on workerd, in headless Chromium: a page
// served from a listed origin lists the tags of a protected repository with credentials; the
// same page from an origin not listed is refused by the browser.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startWharf, request, run, sha256, OCI_MANIFEST } from "./harness.mjs";

const LOGIN = "Basic " + Buffer.from("alice:alice-pw").toString("base64");
let wharf, listed, unlisted, browser;

/** A page that lists the tags of team/app with alice's credentials, and shows what came back. */
function page(registry) {
  return `<!doctype html><title>ui</title><script>
    window.outcome = fetch(${JSON.stringify(`${registry}/v2/team/app/tags/list`)}, {
      headers: { Authorization: ${JSON.stringify(LOGIN)} }, credentials: "include",
    }).then(async (r) => ({ status: r.status, api: r.headers.get("docker-distribution-api-version"), body: await r.json() }),
            (e) => ({ refused: String(e) }));
  </script>`;
}

/** A static server for the page, on a port (so an origin) of its own. */
async function serve() {
  const server = createServer((req, res) => {
    res.setHeader("Content-Type", "text/html");
    res.end(page(wharf.base));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { origin: `http://127.0.0.1:${server.address().port}`, stop: () => server.close() };
}

before(async () => {
  // The ports first: the listed origin goes into wharf's configuration.
  listed = await serve();
  unlisted = await serve();
  const hash = (await run("node", [join(import.meta.dirname, "..", "..", "scripts", "hash-password.mjs"), "alice-pw"])).trim();
  wharf = await startWharf({
    vars: {
      WHARF_RULES: JSON.stringify([{ repositories: "team/*", users: { alice: ["pull", "push"] } }]),
      WHARF_USERS: JSON.stringify({ alice: hash }),
      WHARF_TOKEN_SECRET: "an e2e token secret of forty characters!",
      WHARF_CORS_ORIGINS: `https://ui.example.com, ${listed.origin}`,
    },
  });
  // An image in the protected repository, pushed with alice's credentials.
  const auth = { Authorization: LOGIN };
  const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
  const layer = Buffer.from("a layer for the browser test");
  for (const blob of [config, layer]) {
    const r = await request(wharf.base, "POST", `/v2/team/app/blobs/uploads/?digest=${sha256(blob)}`, { headers: auth, body: blob });
    assert.equal(r.status, 201);
  }
  const manifest = JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha256(layer), size: layer.length }],
  });
  const put = await request(wharf.base, "PUT", "/v2/team/app/manifests/v1", {
    headers: { ...auth, "Content-Type": OCI_MANIFEST }, body: manifest,
  });
  assert.equal(put.status, 201);
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  listed?.stop();
  unlisted?.stop();
  await wharf?.stop();
});

async function outcomeAt(origin) {
  const tab = await browser.newPage();
  try {
    await tab.goto(origin);
    return await tab.evaluate(() => window.outcome);
  } finally {
    await tab.close();
  }
}

test("a page from a listed origin lists the tags of a protected repository", async () => {
  const outcome = await outcomeAt(listed.origin);
  assert.deepEqual(outcome, { status: 200, api: "registry/2.0", body: { name: "team/app", tags: ["v1"] } });
});

test("a page from an origin not listed is refused by the browser", async () => {
  const outcome = await outcomeAt(unlisted.origin);
  assert.match(outcome.refused ?? JSON.stringify(outcome), /Failed to fetch/);
  // What the browser saw: a preflight answered without any CORS header.
  const preflight = await request(wharf.base, "OPTIONS", "/v2/team/app/tags/list", {
    headers: { Origin: unlisted.origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization" },
  });
  assert.equal(preflight.headers.get("access-control-allow-origin"), null);
  const allowed = await request(wharf.base, "OPTIONS", "/v2/team/app/tags/list", {
    headers: { Origin: listed.origin, "Access-Control-Request-Method": "GET" },
  });
  assert.deepEqual([allowed.status, allowed.headers.get("access-control-allow-origin")], [204, listed.origin]);
});
