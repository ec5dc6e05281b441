// Operating wharf on workerd, after skopeo pushes: the web UI in a real browser (headless
// Chromium driven by playwright-core, screenshots kept in target/e2e-artifacts/), notifications
// delivered to a receiver on loopback that fails first, immutable tags, and the request log.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { ROOT, startWharf, startTlsFront, request, run } from "./harness.mjs";
import { Layout } from "./layout.mjs";

const SECRET = randomBytes(16).toString("hex");
const ARTIFACTS = join(ROOT, "target", "e2e-artifacts");
let wharf, front, layout, image, other, receiver, browser;
const received = [];
const tmp = mkdtempSync(join(tmpdir(), "wharf-ops-"));

/** A notification endpoint that answers its first POST 500 (wharf must retry), then 200. */
async function startReceiver() {
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.statusCode = received.length === 1 ? 500 : 200;
      res.end();
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}/hook`, stop: () => server.close() };
}

const skopeo = (...args) => run("skopeo", ["--insecure-policy", ...args]);
const push = (name, ref) =>
  skopeo("copy", "--dest-tls-verify=false", `oci:${layout.dir}:${name}`, `docker://${front.host}/e2e/ops:${ref}`);

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  receiver = await startReceiver();
  wharf = await startWharf({
    vars: {
      WHARF_UI: "true",
      WHARF_NOTIFY_URLS: receiver.url,
      WHARF_NOTIFY_SECRET: SECRET,
      // The queue's first wait before a retry: 30 s by default.
      WHARF_NOTIFY_RETRY_SECONDS: "1",
      WHARF_IMMUTABLE_TAGS: "v*",
      WHARF_DELETE_ENABLED: "true",
      WHARF_LOG_LEVEL: "info",
    },
    // The Worker's console lines (the request log) are printed at wrangler's "log" level.
    logLevel: "log",
  });
  front = await startTlsFront(wharf.host);
  layout = new Layout(join(tmp, "layout"));
  image = layout.image("amd64", [128 * 1024, 64 * 1024]);
  other = layout.image("arm64", [32 * 1024]);
  layout.tag("image", image);
  layout.tag("other", other);
  await push("image", "v1");
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  front?.stop();
  receiver?.stop();
  await wharf?.stop();
});

async function waitFor(what, check, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("a push is notified, signed, and retried after the receiver failed", async () => {
  await waitFor("two deliveries", () => received.length >= 2);
  for (const { headers, body } of received.slice(0, 2)) {
    assert.equal(headers["content-type"], "application/vnd.docker.distribution.events.v2+json");
    const expected = "sha256=" + createHmac("sha256", SECRET).update(body).digest("hex");
    assert.equal(headers["x-wharf-signature-256"], expected);
  }
  assert.deepEqual(received[0].body, received[1].body, "the retry sends the same envelope");
  const [event] = JSON.parse(received[1].body).events;
  assert.equal(event.action, "push");
  assert.equal(event.target.repository, "e2e/ops");
  assert.equal(event.target.tag, "v1");
  assert.equal(event.target.digest, image.digest);
});

test("an immutable tag is refused a move and a delete; a new tag is not", async () => {
  await assert.rejects(push("other", "v1"), /DENIED|denied|immutable/i);
  const del = await request(wharf.base, "DELETE", "/v2/e2e/ops/manifests/v1");
  assert.deepEqual([del.status, del.code()], [403, "DENIED"]);
  const head = await request(wharf.base, "HEAD", "/v2/e2e/ops/manifests/v1", { headers: { Accept: image.mediaType } });
  assert.equal(head.headers.get("docker-content-digest"), image.digest);
  await push("other", "v2");
  await push("other", "latest");
  await push("image", "latest");
});

test("every request logs one JSON line carrying the id of X-Request-Id", async () => {
  const r = await request(wharf.base, "GET", "/v2/e2e/ops/tags/list");
  const id = r.headers.get("x-request-id");
  assert.ok(id);
  await waitFor("the log line", () => wharf.log().includes(`"requestId":"${id}"`));
  const line = wharf.log().split("\n").find((l) => l.includes(`"requestId":"${id}"`));
  const entry = JSON.parse(line.slice(line.indexOf("{")));
  assert.deepEqual([entry.level, entry.method, entry.route, entry.repository, entry.status], ["info", "GET", "tags", "e2e/ops", 200]);
  assert.equal(typeof entry.durationMs, "number");
});

test("the UI in Chromium: repositories, tags with platforms, a manifest's layers", async () => {
  const page = await browser.newPage();
  await page.goto(`${wharf.base}/`);
  assert.match(page.url(), /\/ui\/$/);
  await page.fill("input[name=q]", "ops");
  await page.click("button");
  await page.screenshot({ path: join(ARTIFACTS, "ui-repositories.png"), fullPage: true });
  await page.click("text=e2e/ops");
  const rows = await page.locator("table tr").allInnerTexts();
  const v1 = rows.find((r) => r.startsWith("v1"));
  assert.ok(v1, `a row for v1 in ${rows}`);
  assert.match(v1, /linux\/amd64/);
  assert.match(v1, /UTC/);
  assert.ok(rows.some((r) => r.startsWith("v2") && /linux\/arm64/.test(r)));
  assert.match(await page.textContent("body"), new RegExp(`docker pull ${wharf.host}/e2e/ops:v1`));
  await page.screenshot({ path: join(ARTIFACTS, "ui-repository.png"), fullPage: true });
  await page.click(`a[href$="${image.digest}"]`);
  const body = await page.textContent("body");
  const manifest = JSON.parse(layout.blobs.get(image.digest));
  for (const layer of manifest.layers) assert.ok(body.includes(layer.digest), `layer ${layer.digest} shown`);
  assert.ok(body.includes("linux/amd64"));
  await page.screenshot({ path: join(ARTIFACTS, "ui-manifest.png"), fullPage: true });
  await page.close();
});
