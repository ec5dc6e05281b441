// Notifications through the queue on workerd (Miniflare's local Queues, configured from
// wrangler.toml): an endpoint that is down when the event happens gets it once it is back.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { startWharf, request, freePort, sha256, OCI_MANIFEST } from "./harness.mjs";

let wharf, port, server;
const received = [];

before(async () => {
  port = await freePort();
  wharf = await startWharf({
    vars: { WHARF_NOTIFY_URLS: `http://127.0.0.1:${port}/hook`, WHARF_NOTIFY_RETRY_SECONDS: "1" },
  });
});

after(async () => {
  server?.close();
  await wharf?.stop();
});

/** Starts the endpoint on the port wharf was told, which nothing listened on until now. */
async function endpointUp() {
  server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      received.push(JSON.parse(Buffer.concat(chunks).toString()));
      res.end();
    });
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
}

test("an endpoint that is down when a push happens gets the event once it is back", async () => {
  const config = Buffer.from("{}");
  const blob = await request(wharf.base, "POST", `/v2/e2e/notify/blobs/uploads/?digest=${sha256(config)}`, { body: config });
  assert.equal(blob.status, 201);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: 2 }, layers: [],
  }));
  const put = await request(wharf.base, "PUT", "/v2/e2e/notify/manifests/v1", {
    headers: { "Content-Type": OCI_MANIFEST }, body: manifest,
  });
  assert.equal(put.status, 201);
  // Down for a while: the delivery fails and waits longer each time (1, 1, 2, 4 s...).
  await new Promise((r) => setTimeout(r, 5000));
  assert.equal(received.length, 0);
  await endpointUp();
  const deadline = Date.now() + 30_000;
  while (received.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  assert.equal(received.length, 1, `nothing delivered: ${wharf.log()}`);
  const [event] = received[0].events;
  assert.deepEqual([event.action, event.target.repository, event.target.tag], ["push", "e2e/notify", "v1"]);
  assert.equal(event.target.digest, sha256(manifest));
});
