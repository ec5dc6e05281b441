// Uploads of any size against the Worker on workerd: many uneven chunks, one large streamed
// PATCH without a length, resuming after a status GET, cross-repository mount, Range reads,
// the chunk limit, the scheduled cleanup, and a real chunking client (oras-py).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { join } from "node:path";
import http from "node:http";
import net from "node:net";
import { ROOT, OCI_MANIFEST, startWharf, request, streamRequest, run, sha256 } from "./harness.mjs";

let wharf, strict, measured;

before(async () => {
  wharf = await startWharf({ vars: { WHARF_DELETE_ENABLED: "true" } });
  // Small chunk limit, and every session already "abandoned" for the cron trigger.
  strict = await startWharf({
    vars: { WHARF_MAX_CHUNK_SIZE: String(8 << 20), WHARF_UPLOAD_MAX_AGE_SECONDS: "0" },
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
  const patch = await streamRequest(wharf.base, "PATCH", location, body);
  assert.equal(patch.status, 202, patch.body.toString());
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
  const cron = await request(strict.base, "GET", "/cdn-cgi/handler/scheduled?cron=17+*+*+*+*");
  assert.equal(cron.status, 200);
  const gone = await request(strict.base, "GET", location);
  assert.deepEqual([gone.status, gone.code()], [404, "BLOB_UPLOAD_UNKNOWN"]);
});

test("oras-py pushes in chunks and pulls back identical files", async () => {
  const out = await run("python3", [join(ROOT, "tests", "e2e", "oras_roundtrip.py"), wharf.host, "e2e/up/oras"], { timeout: 300_000 });
  assert.match(out, /oras roundtrip: ok/);
});

/** One request written as raw bytes on a TCP connection (the path exactly as given, a body
 * possibly shorter than its Content-Length, then a half-close); resolves to what came back. */
function rawRequest(host, head, body, { halfClose = false, wait = 5000 } = {}) {
  const [address, port] = host.split(":");
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), address);
    let out = Buffer.alloc(0);
    const done = () => {
      const text = out.toString("latin1");
      const status = Number(text.split(" ")[1]) || undefined;
      const json = text.includes("{") ? text.slice(text.indexOf("{")) : "";
      let code;
      try { code = JSON.parse(json).errors[0].code; } catch {}
      resolve({ status, code, text });
    };
    const timer = setTimeout(() => socket.destroy(), wait);
    // Closed once a whole answer is in (the answer may come before the request ends).
    socket.on("data", (d) => {
      out = Buffer.concat([out, d]);
      const text = out.toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      const length = Number(/content-length: *(\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
      if (end >= 0 && out.length >= end + 4 + length) socket.destroy();
    });
    socket.on("error", () => {});
    socket.on("close", () => { clearTimeout(timer); done(); });
    socket.write(head);
    if (body) socket.write(body);
    if (halfClose) socket.end();
  });
}

test("a chunk out of order or not of its claimed length is refused and the session goes on", async () => {
  const data = randomBytes(32);
  const location = await session(wharf.base, "e2e/up/ranges");
  const first = await req("PATCH", location, { headers: { "Content-Range": "0-15" }, body: data.subarray(0, 16) });
  assert.equal(first.status, 202);
  const d = sha256(data);
  // The closing PUT's chunk, out of order.
  for (const range of ["0-15", "20-35"]) {
    const r = await req("PUT", `${location}?digest=${d}`, { headers: { "Content-Range": range }, body: data.subarray(16) });
    assert.deepEqual([r.status, r.code()], [416, "RANGE_INVALID"], range);
  }
  // 16 bytes claiming 1000.
  const long = await req("PATCH", location, { headers: { "Content-Range": "16-1015" }, body: data.subarray(16) });
  assert.deepEqual([long.status, long.code()], [400, "SIZE_INVALID"]);
  assert.equal((await req("GET", location)).headers.get("range"), "0-15");
  const done = await req("PUT", `${location}?digest=${d}`, { headers: { "Content-Range": "16-31" }, body: data.subarray(16) });
  assert.equal(done.status, 201);
  assert.ok((await req("GET", `/v2/e2e/up/ranges/blobs/${d}`)).body.equals(data));
});

test("no answer without a body names a Content-Encoding, for a client that accepts gzip", async () => {
  // node's fetch sends Accept-Encoding itself; say it outright for the raw requests too.
  const gzip = { "Accept-Encoding": "gzip, deflate, br" };
  const data = randomBytes(100);
  const d = sha256(data);
  const seen = [];
  // `coding` "identity" (no coding) for a HEAD of a JSON answer, which keeps its GET's type.
  const check = (what, r, status, coding = null) => {
    assert.equal(r.status, status, what);
    seen.push(what);
    assert.equal(r.headers.get("content-encoding"), coding, `${what}: ${r.headers.get("content-encoding")}`);
  };
  const started = await req("POST", "/v2/e2e/up/enc/blobs/uploads/", { headers: gzip });
  check("POST (202)", started, 202);
  const location = started.headers.get("location");
  check("PATCH (202)", await req("PATCH", location, { headers: gzip, body: data }), 202);
  check("GET session (204)", await req("GET", location, { headers: gzip }), 204);
  check("PUT (201)", await req("PUT", `${location}?digest=${d}`, { headers: gzip }), 201);
  check("POST ?digest= (201)", await req("POST", `/v2/e2e/up/enc/blobs/uploads/?digest=${d}`, { headers: gzip, body: data }), 201);
  const other = (await req("POST", "/v2/e2e/up/enc/blobs/uploads/", { headers: gzip })).headers.get("location");
  check("DELETE session (204)", await req("DELETE", other, { headers: gzip }), 204);
  check("HEAD blob (200)", await req("HEAD", `/v2/e2e/up/enc/blobs/${d}`, { headers: gzip }), 200);
  const etag = { ...gzip, "If-None-Match": `"${d}"` };
  check("GET blob (304)", await req("GET", `/v2/e2e/up/enc/blobs/${d}`, { headers: etag }), 304);
  const config = Buffer.from("{}");
  await req("POST", `/v2/e2e/up/enc/blobs/uploads/?digest=${sha256(config)}`, { body: config });
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: d, size: data.length }],
  }));
  const typed = { ...gzip, "Content-Type": OCI_MANIFEST, Accept: OCI_MANIFEST };
  check("PUT manifest (201)", await req("PUT", "/v2/e2e/up/enc/manifests/v1", { headers: typed, body: manifest }), 201);
  check("HEAD manifest (200)", await req("HEAD", "/v2/e2e/up/enc/manifests/v1", { headers: typed }), 200);
  const revalidate = { ...typed, "If-None-Match": `"${sha256(manifest)}"` };
  check("GET manifest (304)", await req("GET", "/v2/e2e/up/enc/manifests/v1", { headers: revalidate }), 304);
  check("HEAD /v2/ (200)", await req("HEAD", "/v2/", { headers: gzip }), 200, "identity");
  check("HEAD missing manifest (404)", await req("HEAD", "/v2/e2e/up/enc/manifests/nope", { headers: gzip }), 404, "identity");
  check("DELETE blob (202)", await req("DELETE", `/v2/e2e/up/enc/blobs/${d}`, { headers: gzip }), 202);
  // The same on the wire, as curl --compressed sends it.
  const raw = await rawRequest(wharf.host, `POST /v2/e2e/up/enc/blobs/uploads/ HTTP/1.1\r\nHost: ${wharf.host}\r\nAccept-Encoding: gzip\r\nContent-Length: 0\r\n\r\n`);
  assert.equal(raw.status, 202);
  assert.doesNotMatch(raw.text.split("\r\n\r\n")[0], /content-encoding/i);
  assert.equal(seen.length, 14);
});

test("an encoded slash stays inside its segment, on the path workerd hands over", async () => {
  const location = await session(wharf.base, "e2e/up/slash");
  const id = location.split("/").pop();
  const cases = [
    [`GET /v2/e2e/up/slash/blobs/sha256:..%2F..%2Fetc%2Fpasswd`, 400, "DIGEST_INVALID"],
    [`PUT /v2/e2e/up/slash/manifests/a%2Fb`, 400, "TAG_INVALID"],
    [`PATCH /v2/e2e/up/slash/blobs/uploads/..%2F${id}`, 404, "BLOB_UPLOAD_UNKNOWN"],
    [`GET /v2/e2e/up/slash/blobs/uploads/${id}%2F..`, 404, "BLOB_UPLOAD_UNKNOWN"],
    [`GET /v2/e2e%2Fup/slash/tags/list`, 400, "NAME_INVALID"],
    [`POST /v2/e2e/up%2F..%2F..%2Fx/blobs/uploads/`, 400, "NAME_INVALID"],
    // workerd resolves dot segments (also encoded ones) before wharf sees the path: they
    // climb no further than another route, whose own checks answer.
    [`GET /v2/e2e/up/slash/blobs/uploads/%2e%2e/x`, 400, "DIGEST_INVALID"],
    [`GET /v2/e2e/up/../../_catalog`, 200, undefined],
    [`GET /v2/e2e/up/slash/%2e%2e/%2e%2e/_catalog`, 404, "UNSUPPORTED"],
  ];
  for (const [line, status, code] of cases) {
    const r = await rawRequest(wharf.host, `${line} HTTP/1.1\r\nHost: ${wharf.host}\r\nContent-Length: 0\r\n\r\n`);
    assert.deepEqual([r.status, r.code], [status, code], line);
  }
  // The session is untouched by all of it.
  assert.deepEqual([(await req("GET", location)).status, (await req("GET", location)).headers.get("range")], [204, "0-0"]);
});

test("a body cut short (then a half-close) throws nothing uncaught and leaves each upload as it was", async () => {
  // Its own wharf, to read the Worker's log lines.
  const logged = await startWharf({ logLevel: "log" });
  try {
    const base = logged.base;
    const location = await session(base, "e2e/up/cut");
    const fresh = await session(base, "e2e/up/cut");
    const start = randomBytes(10);
    assert.equal((await request(base, "PATCH", location, { body: start })).status, 202);
    const whole = randomBytes(64);
    const d = sha256(whole);
    const cut = (method, path, length, sent) =>
      rawRequest(logged.host, `${method} ${path} HTTP/1.1\r\nHost: ${logged.host}\r\nContent-Length: ${length}\r\n\r\n`, sent, { halfClose: true });
    const cases = [
      ["PATCH", location, 64, randomBytes(16)],
      // Two parts announced: the first streams to R2, the second breaks off.
      ["PATCH", location, 10 << 20, randomBytes((5 << 20) + 16)],
      ["PUT", `${location}?digest=${d}`, 64, randomBytes(16)],
      ["PUT", `${fresh}?digest=${d}`, 64, whole.subarray(0, 16)],
      ["POST", `/v2/e2e/up/cut/blobs/uploads/?digest=${d}`, 64, whole.subarray(0, 16)],
    ];
    for (const [method, path, length, sent] of cases) {
      const r = await cut(method, path, length, sent);
      // The client still listens after its half-close: it gets wharf's answer.
      assert.deepEqual([r.status, r.code], [400, "BLOB_UPLOAD_INVALID"], `${method} ${path}`);
    }
    await new Promise((r) => setTimeout(r, 500));
    const lines = logged.log().split("\n");
    // One error line each, and nothing thrown uncaught, by the Worker or the server around it.
    assert.equal(lines.filter((l) => /"level":"error".*broke off/.test(l)).length, cases.length, lines.join("\n"));
    assert.deepEqual(lines.filter((l) => /Uncaught|restarted mid-request/i.test(l)), []);
    // Nothing was published, and both sessions go on where they stood.
    assert.equal((await request(base, "HEAD", `/v2/e2e/up/cut/blobs/${d}`)).status, 404);
    assert.equal((await request(base, "GET", location)).headers.get("range"), "0-9");
    assert.equal((await request(base, "GET", fresh)).headers.get("range"), "0-0");
    const rest = randomBytes(6);
    const all = Buffer.concat([start, rest]);
    assert.equal((await request(base, "PUT", `${location}?digest=${sha256(all)}`, { body: rest })).status, 201);
    assert.ok((await request(base, "GET", `/v2/e2e/up/cut/blobs/${sha256(all)}`)).body.equals(all));
    assert.equal((await request(base, "PUT", `${fresh}?digest=${d}`, { body: whole })).status, 201);
  } finally {
    await logged.stop();
  }
});
