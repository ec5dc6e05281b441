// Uploads of any size against the Worker on workerd: many uneven chunks, one large streamed
// PATCH without a length, resuming after a status GET, cross-repository mount, Range reads,
// the chunk limit, the scheduled cleanup, and a real chunking client (oras-py).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { join } from "node:path";
import http from "node:http";
import { ROOT, startWharf, request, run, sha256 } from "./harness.mjs";

let wharf, strict, measured;

before(async () => {
  wharf = await startWharf({ vars: { WHARF_DELETE_ENABLED: "true" } });
  // Small chunk limit, every session already "abandoned", and the cron reachable over HTTP.
  strict = await startWharf({
    vars: { WHARF_MAX_CHUNK_SIZE: String(8 << 20), WHARF_UPLOAD_MAX_AGE_SECONDS: "0" },
    args: ["--test-scheduled"],
  });
  // The self-test build, for its wasm memory endpoint, with nothing else running in it.
  measured = await startWharf({ vars: { WHARF_MAX_CHUNK_SIZE: String(8 << 20) }, selftest: true });
});

after(() => {
  wharf?.stop();
  strict?.stop();
  measured?.stop();
});

const req = (method, path, opts) => request(wharf.base, method, path, opts);

async function session(base, repo) {
  const r = await request(base, "POST", `/v2/${repo}/blobs/uploads/`);
  assert.equal(r.status, 202);
  assert.equal(r.headers.get("oci-chunk-min-length"), String(5 << 20));
  return r.headers.get("location");
}

test("a 64 MiB blob in 7 uneven chunks, resumed after a status GET, lands byte for byte", async () => {
  const data = randomBytes(64 << 20);
  const location = await session(wharf.base, "e2e/up/big");
  const cuts = [0, 1, 3 << 20, 11 << 20, (11 << 20) + 7, 30 << 20, 47 << 20, data.length];
  for (let i = 0; i + 1 < cuts.length; i++) {
    if (i === 4) {
      // A client that lost track asks where the upload stands and goes on from there.
      const status = await req("GET", location);
      assert.equal(status.status, 204);
      assert.equal(status.headers.get("range"), `0-${cuts[i] - 1}`);
    }
    const r = await req("PATCH", location, {
      headers: { "Content-Range": `${cuts[i]}-${cuts[i + 1] - 1}` },
      body: data.subarray(cuts[i], cuts[i + 1]),
    });
    assert.equal(r.status, 202, r.body.toString());
  }
  const d = sha256(data);
  assert.equal((await req("PUT", `${location}?digest=${d}`)).status, 201);
  const got = await req("GET", `/v2/e2e/up/big/blobs/${d}`);
  assert.equal(got.headers.get("content-length"), String(data.length));
  assert.ok(got.body.equals(data));
});

test("a 200 MiB blob in one streamed PATCH without Content-Length", async () => {
  const size = 200 << 20;
  const block = randomBytes(1 << 20);
  const hash = createHash("sha256");
  let sent = 0;
  const body = new ReadableStream({
    pull(controller) {
      if (sent >= size) return controller.close();
      hash.update(block);
      controller.enqueue(new Uint8Array(block));
      sent += block.length;
    },
  });
  const location = await session(wharf.base, "e2e/up/stream");
  const patch = await fetch(wharf.base + location, { method: "PATCH", body, duplex: "half" });
  assert.equal(patch.status, 202, await patch.text());
  assert.equal(patch.headers.get("range"), `0-${size - 1}`);
  const d = "sha256:" + hash.digest("hex");
  const done = await req("PUT", `${location}?digest=${d}`);
  assert.equal(done.status, 201, `${done.body}\n--- wrangler log ---\n${wharf.log()}`);
  const head = await req("HEAD", `/v2/e2e/up/stream/blobs/${d}`);
  assert.equal(head.headers.get("content-length"), String(size));
  const tail = await req("GET", `/v2/e2e/up/stream/blobs/${d}`, { headers: { Range: `bytes=${size - (1 << 20)}-` } });
  assert.equal(tail.status, 206);
  assert.equal(tail.headers.get("content-range"), `bytes ${size - (1 << 20)}-${size - 1}/${size}`);
  assert.ok(tail.body.equals(block), "the last MiB is the last block sent");
});

test("a cross-repository mount links the blob without an upload", async () => {
  const data = randomBytes(6 << 20);
  const d = sha256(data);
  assert.equal((await req("POST", `/v2/e2e/up/src/blobs/uploads/?digest=${d}`, { body: data })).status, 201);
  const mount = await req("POST", `/v2/e2e/up/dst/blobs/uploads/?mount=${d}&from=e2e/up/src`);
  assert.equal(mount.status, 201);
  assert.equal(mount.headers.get("location"), `/v2/e2e/up/dst/blobs/${d}`);
  assert.ok((await req("GET", `/v2/e2e/up/dst/blobs/${d}`)).body.equals(data));
  const anywhere = await req("POST", `/v2/e2e/up/third/blobs/uploads/?mount=${d}`);
  assert.equal(anywhere.status, 201, "mount without from");
  const missing = await req("POST", `/v2/e2e/up/dst/blobs/uploads/?mount=${sha256(Buffer.from("no"))}&from=e2e/up/src`);
  assert.equal(missing.status, 202, "falls back to a session");
});

test("blob Range reads: 206 inside, 416 past the end", async () => {
  const data = Buffer.from("0123456789");
  const d = sha256(data);
  await req("POST", `/v2/e2e/up/range/blobs/uploads/?digest=${d}`, { body: data });
  const part = await req("GET", `/v2/e2e/up/range/blobs/${d}`, { headers: { Range: "bytes=3-6" } });
  assert.deepEqual([part.status, part.body.toString(), part.headers.get("content-range")], [206, "3456", "bytes 3-6/10"]);
  const past = await req("GET", `/v2/e2e/up/range/blobs/${d}`, { headers: { Range: "bytes=10-" } });
  assert.deepEqual([past.status, past.code(), past.headers.get("content-range")], [416, "RANGE_INVALID", "bytes */10"]);
});

test("a chunk broken off while its part streams leaves the session as it was", async () => {
  const data = randomBytes(24 << 20);
  const location = await session(wharf.base, "e2e/up/broken");
  const first = await req("PATCH", location, { body: data.subarray(0, 8 << 20) });
  assert.equal(first.status, 202);
  // The second chunk announces 16 MiB and the client goes away after 10: the part under way
  // fails, and the session still ends where the first chunk left it.
  await new Promise((resolve) => {
    const url = new URL(wharf.base + location);
    const r = http.request(url, {
      method: "PATCH",
      headers: { "Content-Length": String(16 << 20), "Content-Range": `${8 << 20}-${(24 << 20) - 1}` },
    });
    r.on("error", resolve);
    r.on("response", resolve);
    r.write(data.subarray(8 << 20, 18 << 20), () => setTimeout(() => { r.destroy(); resolve(); }, 500));
  });
  let status;
  for (let i = 0; i < 50; i++) {
    // The broken request may still be finishing in the Worker; the session settles after it.
    status = await req("GET", location);
    if (status.headers.get("range") === `0-${(8 << 20) - 1}`) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual([status.status, status.headers.get("range")], [204, `0-${(8 << 20) - 1}`]);
  const retry = await req("PATCH", location, { headers: { "Content-Range": `${8 << 20}-${(24 << 20) - 1}` }, body: data.subarray(8 << 20) });
  assert.equal(retry.status, 202, retry.body.toString());
  assert.equal((await req("PUT", `${location}?digest=${sha256(data)}`)).status, 201);
  assert.ok((await req("GET", `/v2/e2e/up/broken/blobs/${sha256(data)}`)).body.equals(data));
});

test("chunks of announced length stream their parts: wharf holds less than a part", async () => {
  // Five 8 MiB chunks, each one 8 MiB part. Buffering a part before sending it would take
  // over 8 MiB of wasm memory; streamed, a part goes to R2 a read (1 MiB) at a time.
  const data = randomBytes(40 << 20);
  const location = await session(measured.base, "e2e/up/streamed");
  for (let start = 0; start < data.length; start += 8 << 20) {
    const chunk = data.subarray(start, start + (8 << 20));
    const r = await request(measured.base, "PATCH", location, { body: chunk });
    assert.equal(r.status, 202, r.body.toString());
  }
  const d = sha256(data);
  assert.equal((await request(measured.base, "PUT", `${location}?digest=${d}`)).status, 201);
  assert.ok((await request(measured.base, "GET", `/v2/e2e/up/streamed/blobs/${d}`)).body.equals(data));
  const memory = (await request(measured.base, "GET", "/_wharf/selftest/memory")).json().wasmMemoryBytes;
  assert.ok(memory < 6 << 20, `wasm memory ${memory} bytes`);
});

test("a chunk over WHARF_MAX_CHUNK_SIZE is 413 and the session is unchanged", async () => {
  const location = await session(strict.base, "e2e/up/limit");
  const r = await request(strict.base, "PATCH", location, { body: randomBytes((8 << 20) + 1) });
  assert.deepEqual([r.status, r.code()], [413, "SIZE_INVALID"]);
  const status = await request(strict.base, "GET", location);
  assert.deepEqual([status.status, status.headers.get("range")], [204, "0-0"]);
});

test("the scheduled cleanup aborts abandoned sessions", async () => {
  const location = await session(strict.base, "e2e/up/abandoned");
  assert.equal((await request(strict.base, "PATCH", location, { body: randomBytes(6 << 20) })).status, 202);
  await new Promise((r) => setTimeout(r, 20));
  const cron = await request(strict.base, "GET", "/__scheduled?cron=17+*+*+*+*");
  assert.equal(cron.status, 200);
  const gone = await request(strict.base, "GET", location);
  assert.deepEqual([gone.status, gone.code()], [404, "BLOB_UPLOAD_UNKNOWN"]);
});

test("oras-py pushes in chunks and pulls back identical files", async () => {
  const out = await run("python3", [join(ROOT, "tests", "e2e", "oras_roundtrip.py"), wharf.host, "e2e/up/oras"], { timeout: 300_000 });
  assert.match(out, /oras roundtrip: ok/);
});
