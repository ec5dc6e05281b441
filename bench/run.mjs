// wharf's benchmark: `npm run bench -- <mode>`. Measures through the local server of `npm start`
// (scripts/serve.mjs: workerd with local R2/KV) on this machine; numbers are for comparison within one run, not absolute.
//
// Modes:
//   pulls    (the default) the pull paths and a manifest push, under load from `hey` (16
//            connections, 10 s, three runs, medians), against Distribution 2.8 (apt's
//            docker-registry, filesystem storage, loopback) measured in the same run: req/s,
//            p50, p99, errors and the ratios; the manifest PUT against its floor (the self-test
//            build's one R2 put, then one KV put, of the same body); plus the wasm size and
//            the local server's start-up.
//   load     64 concurrent clients on loopback for 60 s (BENCH_SECONDS), against `npm start`'s
//            default settings (a log line per request), each pushing images
//            under new tags or pulling acknowledged ones, every pulled manifest and blob
//            checked against its digest; at the end every acknowledged tag must resolve to
//            what was pushed; reports errors and workerd's peak open file descriptors. Fails
//            on any 5xx or mismatch. With BENCH_GC=1, garbage
//            collection is on (grace period 5 s) and runs every 2 s through the admin endpoint
//            while clients also delete images and push new ones reusing the deleted images'
//            layers without uploading them again (the race the collector's protocol handles);
//            at the end every acknowledged image must still pull, blobs included.
//   uploads  a 256 MiB blob pushed monolithic (one POST ?digest=) and in 16 MiB chunks
//            (POST, 16 PATCH, PUT; BENCH_SIZE_MIB, BENCH_CHUNK_MIB and BENCH_ROUNDS change the
//            blob size, the chunk size and the number of rounds), against the
//            baseline of a plain R2 put of the same bytes through the same Worker, in
//            interleaved rounds, each upload in a fresh server; MB/s (median of 6), the peak
//            resident memory of the workerd process above its idle level (median), and the
//            Worker's wasm memory high-water mark (the most of any round). BENCH_VERBOSE=1
//            prints every round's figure too.
//   cpu      CPU per request of each kind (manifests, listings, blobs, a monolithic upload, a
//            5 MiB and a 16 MiB chunk, a UI page): the workerd process's CPU time over
//            BENCH_REQUESTS (200) requests of a kind, one after another, per request; and above
//            a reference measured in the same run: GET /v2/ (the HTTP stack alone), or for an
//            upload the self-test build's R2 put of the same size (the simulator's own work).
//   scale    a registry at scale, written straight into the local R2 and KV: 10,000
//            repositories of 10 manifests, all but one tagged (BENCH_REPOS, BENCH_MANIFESTS), and
//            one of 100,000 tags (BENCH_TAGS); then the first and a deep page of tags/list and
//            _catalog (latency, storage operations), a garbage collection over all of it in
//            steps (wall time, steps by phase, most operations in one), and the wasm memory.
//            BENCH_STATE=<dir> keeps the filled registry there; the next run starts from it.
//            BENCH_POLL_MS (500) is how often the run's state is read while it goes on.
//   startup  the release bundle's cost at start: BENCH_ROUNDS cold starts of the local server
//            (scripts/serve.mjs, build skipped) to the first answered GET /v2/, and the wasm's compile and
//            instantiation times in this Node's V8 (workerd's engine) with its bindings loaded
//            as the Worker loads them; medians, with the bundle's gzip size.

import { randomBytes, createHash } from "node:crypto";
import { readFileSync, readdirSync, existsSync, mkdtempSync, writeFileSync, rmSync, cpSync } from "node:fs";
import { join } from "node:path";
import { cpus, tmpdir } from "node:os";
import { gzipSync } from "node:zlib";
import { spawn } from "node:child_process";
import { startWharf, request, freePort, run as exec, sha256, OCI_MANIFEST } from "../tests/e2e/harness.mjs";

const MiB = 1 << 20;
const mode = process.argv[2] ?? "pulls";

/** The workerd processes below `pid`. */
function workerdPids(pid) {
  const children = new Map();
  for (const p of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(p));
    } catch {}
  }
  const out = [];
  const walk = (p) => {
    for (const c of children.get(p) ?? []) {
      try {
        if (readFileSync(`/proc/${c}/comm`, "utf8").trim().startsWith("workerd")) out.push(c);
      } catch {}
      walk(c);
    }
  };
  walk(pid);
  return out;
}

function memoryKiB(pids, field) {
  let total = 0;
  for (const p of pids) {
    const m = readFileSync(`/proc/${p}/status`, "utf8").match(new RegExp(`${field}:\\s+(\\d+)`));
    if (m) total += Number(m[1]);
  }
  return total;
}

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 6);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timed(fn) {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

/**
 * Uploads with curl (node's fetch breaks off bodies this large): one request per entry of
 * `requests` ({ method, url, file, headers }), in one curl run over one kept-alive connection,
 * as a registry client sends its chunks. Returns the statuses.
 */
async function curl(requests) {
  const args = [];
  for (const [i, { method, url, file, headers = {} }] of requests.entries()) {
    if (i > 0) args.push("--next");
    // "Expect:" off: curl otherwise waits a second for a "100 Continue" that workerd never sends.
    args.push("-s", "-o", "/dev/null", "-w", "%{http_code}\\n", "-H", "Expect:", "-X", method, url);
    // -T streams the file (--data-binary reads it whole into memory first, and fails at 1 GiB);
    // the explicit target keeps -T from appending the file's name to a URL ending in "/".
    const target = new URL(url);
    if (file) args.push("-T", file, "--request-target", target.pathname + target.search);
    for (const [k, v] of Object.entries(headers)) args.push("-H", `${k}: ${v}`);
  }
  return (await exec("curl", args, { timeout: 600_000 })).trim().split("\n").map(Number);
}

async function uploads() {
  const size = Number(process.env.BENCH_SIZE_MIB ?? 256) * MiB;
  const chunk = Number(process.env.BENCH_CHUNK_MIB ?? 16) * MiB;
  const dir = mkdtempSync(join(tmpdir(), "wharf-bench-"));
  const whole = join(dir, "blob");
  const chunks = [];
  const expect = (what, status, want) => {
    if (status !== want) throw new Error(`${what}: ${status}, expected ${want}`);
  };
  const scenarios = {
    "R2 put through the Worker (baseline)": async (base, digest) => {
      const [status] = await curl([{ method: "PUT", url: `${base}/_wharf/selftest/put?digest=${digest}`, file: whole }]);
      expect("baseline", status, 201);
    },
    "monolithic POST ?digest=": async (base, digest) => {
      const url = `${base}/v2/bench/mono/blobs/uploads/?digest=${digest}`;
      expect("monolithic", (await curl([{ method: "POST", url, file: whole }]))[0], 201);
    },
    [`${chunk / MiB} MiB chunks (POST, PATCH x${Math.ceil(size / chunk)}, PUT)`]: async (base, digest) => {
      const start = await request(base, "POST", "/v2/bench/chunked/blobs/uploads/");
      const location = base + start.headers.get("location");
      const patches = chunks.map((file, i) => {
        const headers = { "Content-Range": `${i * chunk}-${(i + 1) * chunk - 1}` };
        return { method: "PATCH", url: location, file, headers };
      });
      const statuses = await curl([...patches, { method: "PUT", url: `${location}?digest=${digest}` }]);
      statuses.forEach((status, i) => expect(i < chunks.length ? "PATCH" : "PUT", status, i < chunks.length ? 202 : 201));
    },
  };
  // Every upload runs in a fresh server: a process's own state (its heap, its R2 simulator's
  // database) would otherwise favour one scenario for the whole run, and each upload's memory
  // figures are its own. The rounds take the scenarios in turn, so a slow moment of the machine
  // hits them all alike.
  // A monolithic upload is one request: the chunk limit (default 512 MiB) must let it in. The
  // self-test build: its baseline put and memory endpoints; the upload path is the release one.
  const vars = { WHARF_MAX_CHUNK_SIZE: String(Math.max(size, 512 * MiB)) };
  const rows = Object.entries(scenarios).map(([name, run]) => ({ name, run, speeds: [], growths: [], wasm: [] }));
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const data = randomBytes(size);
      writeFileSync(whole, data);
      chunks.length = 0;
      for (let off = 0; off < size; off += chunk) {
        chunks.push(join(dir, `chunk-${off / chunk}`));
        writeFileSync(chunks.at(-1), data.subarray(off, off + chunk));
      }
      const digest = "sha256:" + createHash("sha256").update(data).digest("hex");
      // Each round starts with another scenario: the first one after writing the files above
      // shares the disk with their write-back.
      for (let i = 0; i < rows.length; i++) {
        const row = rows[(round + i) % rows.length];
        const wharf = await startWharf({ vars, selftest: true });
        try {
          const pids = workerdPids(wharf.pid);
          const idle = memoryKiB(pids, "VmRSS");
          row.speeds.push(size / MiB / (await timed(() => row.run(wharf.base, digest))));
          row.growths.push((memoryKiB(pids, "VmHWM") - idle) / 1024);
          row.wasm.push((await request(wharf.base, "GET", "/_wharf/selftest/memory")).json().wasmMemoryBytes / MiB);
        } finally {
          await wharf.stop();
        }
      }
    }
    for (const row of rows) {
      row.mbps = median(row.speeds);
      row.growthMiB = median(row.growths);
      row.wasmMiB = Math.max(...row.wasm);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const baseline = rows[0].mbps;
  console.log(`\nUploads of a ${size / MiB} MiB blob through the local server (scripts/serve.mjs), ${new Date().toISOString().slice(0, 10)}, ${cpus().length} × ${cpus()[0].model}`);
  console.log(`| scenario | MB/s (median of ${ROUNDS}) | vs baseline | workerd peak RSS above idle (median) | wasm memory (most) |`);
  console.log("|---|---|---|---|---|");
  for (const r of rows) {
    const cells = [r.name, r.mbps.toFixed(0), `${(r.mbps / baseline).toFixed(2)}x`, `${r.growthMiB.toFixed(0)} MiB`, `${r.wasmMiB.toFixed(1)} MiB`];
    console.log(`| ${cells.join(" | ")} |`);
  }
  console.log("(workerd's RSS includes the local R2 simulator; the wasm memory is wharf's own high-water mark.)");
  if (process.env.BENCH_VERBOSE) for (const r of rows) console.log(r.name, r.speeds.map((x) => x.toFixed(0)).join(" "));
}

/** Distribution 2.8 (apt's docker-registry) on loopback with a throw-away filesystem store. */
async function startDistribution() {
  const dir = mkdtempSync(join(tmpdir(), "wharf-distribution-"));
  const port = await freePort();
  const config = join(dir, "config.yml");
  writeFileSync(config, [
    "version: 0.1",
    "log: {level: error, accesslog: {disabled: true}}",
    `storage: {filesystem: {rootdirectory: ${join(dir, "data")}}, delete: {enabled: true}}`,
    `http: {addr: 127.0.0.1:${port}}`,
  ].join("\n"));
  const child = spawn("docker-registry", ["serve", config], { stdio: "ignore" });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/v2/`)).status === 200) break;
    } catch {}
    if (i > 100) throw new Error("docker-registry did not start");
    await new Promise((r) => setTimeout(r, 100));
  }
  return { base, stop: () => { child.kill(); rmSync(dir, { recursive: true, force: true }); } };
}

/** Pushes a blob with POST then PUT ?digest= (the monolithic flow both registries speak). */
async function pushBlob(base, repo, bytes) {
  const digest = sha256(bytes);
  const start = await request(base, "POST", `/v2/${repo}/blobs/uploads/`);
  if (start.status !== 202) throw new Error(`POST: ${start.status}`);
  const location = new URL(start.headers.get("location"), base);
  location.searchParams.set("digest", digest);
  const put = await request(base, "PUT", location.pathname + location.search, {
    headers: { "Content-Type": "application/octet-stream" }, body: bytes,
  });
  if (put.status !== 201) throw new Error(`PUT blob: ${put.status}`);
  return digest;
}

/** A small image: a config and one 1 MiB layer. Returns its manifest and the layer's digest. */
async function seed(base, repo, config, layer) {
  const c = await pushBlob(base, repo, config);
  const l = await pushBlob(base, repo, layer);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: c, size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: l, size: layer.length }],
  }));
  const r = await request(base, "PUT", `/v2/${repo}/manifests/v1`, { headers: { "Content-Type": OCI_MANIFEST }, body: manifest });
  if (r.status !== 201) throw new Error(`PUT manifest: ${r.status} ${r.body}`);
  return { manifest, digest: sha256(manifest), layer: l };
}

/** One `hey` run: req/s, p50 and p99 (ms), and the answers that were not `expect`. */
async function hey(url, args, expect, seconds) {
  const out = await exec("hey", ["-z", `${seconds}s`, "-c", "16", "-o", "csv", ...args, url], { timeout: (seconds + 60) * 1000 });
  const rows = out.trim().split("\n").slice(1).map((l) => l.split(","));
  const times = rows.map((r) => Number(r[0]) * 1000).sort((a, b) => a - b);
  const pct = (p) => times[Math.min(times.length - 1, Math.floor((times.length * p) / 100))] ?? NaN;
  return { rps: rows.length / seconds, p50: pct(50), p99: pct(99), errors: rows.filter((r) => Number(r[6]) !== expect).length };
}

/** 32 MiB pushed over and over (POST, then PUT with the body) by 4 clients for `seconds`. */
async function uploadLoad(base, blob, seconds) {
  const times = [];
  let errors = 0;
  const end = Date.now() + seconds * 1000;
  await Promise.all([0, 1, 2, 3].map(async (i) => {
    while (Date.now() < end) {
      const t = process.hrtime.bigint();
      try { await pushBlob(base, `bench/upload${i}`, blob); } catch { errors++; }
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
  }));
  times.sort((a, b) => a - b);
  const pct = (p) => times[Math.min(times.length - 1, Math.floor((times.length * p) / 100))];
  return { rps: times.length / seconds, p50: pct(50), p99: pct(99), errors };
}

async function pulls() {
  const seconds = Number(process.env.BENCH_SECONDS ?? 10);
  const runs = Number(process.env.BENCH_RUNS ?? 3);
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
  const layer = randomBytes(MiB);
  const big = randomBytes(32 * MiB);
  const dir = mkdtempSync(join(tmpdir(), "wharf-bench-"));
  const started = process.hrtime.bigint();
  const wharf = await startWharf();
  const startup = Number(process.hrtime.bigint() - started) / 1e9;
  const distribution = await startDistribution();
  // The floor of a manifest push: the self-test build's one R2 put, then one KV put.
  const floor = await startWharf({ selftest: true });
  try {
    const targets = { wharf: wharf.base, distribution: distribution.base };
    const image = {};
    for (const [name, base] of Object.entries(targets)) image[name] = await seed(base, "bench/app", config, layer);
    const manifestFile = join(dir, "manifest.json");
    writeFileSync(manifestFile, image.wharf.manifest);
    const oci = ["-H", `Accept: ${OCI_MANIFEST}`];
    const scenarios = [
      // No storage at all: what the server and its HTTP stack cost by themselves.
      ["GET /v2/", (b) => hey(`${b}/v2/`, [], 200, seconds)],
      ["GET manifest by tag", (b) => hey(`${b}/v2/bench/app/manifests/v1`, oci, 200, seconds)],
      ["HEAD manifest by tag", (b) => hey(`${b}/v2/bench/app/manifests/v1`, ["-m", "HEAD", ...oci], 200, seconds)],
      ["GET manifest by digest", (b) => hey(`${b}/v2/bench/app/manifests/${image.wharf.digest}`, oci, 200, seconds)],
      ["GET 1 MiB blob", (b) => hey(`${b}/v2/bench/app/blobs/${image.wharf.layer}`, ["-disable-compression"], 200, seconds)],
      // hey's Go client asks for gzip unless told not to.
      ["GET 1 MiB blob, Accept-Encoding: gzip", (b) => hey(`${b}/v2/bench/app/blobs/${image.wharf.layer}`, [], 200, seconds)],
      ["PUT manifest", (b) => hey(`${b}/v2/bench/app/manifests/v1`, ["-m", "PUT", "-T", OCI_MANIFEST, "-D", manifestFile], 201, seconds)],
      ["32 MiB upload (4 clients)", (b) => uploadLoad(b, big, seconds)],
    ];
    const rows = [];
    const floorPut = [];
    for (const [scenario, measure] of scenarios) {
      const results = { wharf: [], distribution: [] };
      // Alternate the registries, so that a slow moment of the machine hits them all.
      for (let i = 0; i < runs; i++) {
        for (const [name, base] of Object.entries(targets)) results[name].push(await measure(base));
        if (scenario === "PUT manifest") {
          floorPut.push(await hey(`${floor.base}/_wharf/selftest/floor`, ["-m", "PUT", "-T", OCI_MANIFEST, "-D", manifestFile], 201, seconds));
        }
      }
      const med = (name) => {
        const rs = results[name];
        return { rps: median(rs.map((r) => r.rps)), p50: median(rs.map((r) => r.p50)), p99: median(rs.map((r) => r.p99)), errors: rs.reduce((a, r) => a + r.errors, 0) };
      };
      rows.push({ scenario, wharf: med("wharf"), distribution: med("distribution") });
      console.error(`${scenario}: done`);
    }
    const wasm = readFileSync(new URL("../build/index_bg.wasm", import.meta.url));
    const fmt = (r) => `${r.rps.toFixed(r.rps < 10 ? 1 : 0)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.errors}`;
    console.log(`\nPulls through the local server (scripts/serve.mjs) vs Distribution 2.8, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} × ${cpus()[0].model}; hey, 16 connections, ${seconds} s, median of ${runs}`);
    console.log("| scenario | wharf req/s | p50 ms | p99 ms | errors | Distribution req/s | p50 ms | p99 ms | errors | wharf / Distribution |");
    console.log("|---|---|---|---|---|---|---|---|---|---|");
    for (const r of rows) {
      console.log(`| ${r.scenario} | ${fmt(r.wharf)} | ${fmt(r.distribution)} | ${(r.wharf.rps / r.distribution.rps).toFixed(2)}x |`);
    }
    const plain = rows.find((r) => r.scenario === "GET 1 MiB blob").wharf.rps;
    const gzip = rows.find((r) => r.scenario.startsWith("GET 1 MiB blob, Accept")).wharf.rps;
    console.log(`\nwharf blob GET with gzip accepted / without: ${(gzip / plain).toFixed(2)}x`);
    const put = rows.find((r) => r.scenario === "PUT manifest").wharf.rps;
    const floorRps = median(floorPut.map((r) => r.rps));
    console.log(`PUT manifest: wharf ${put.toFixed(0)} req/s, floor (one R2 put, then one KV put) ${floorRps.toFixed(0)} req/s: ${(put / floorRps).toFixed(2)}x of the floor`);
    console.log(`wasm: ${(wasm.length / 1024).toFixed(0)} KiB raw, ${(gzipSync(wasm, { level: 9 }).length / 1024).toFixed(0)} KiB gzip; local server start-up: ${startup.toFixed(1)} s`);
  } finally {
    await Promise.all([wharf.stop(), floor.stop()]);
    distribution.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function load() {
  const seconds = Number(process.env.BENCH_SECONDS ?? 60);
  const clients = 64;
  const collecting = process.env.BENCH_GC === "1";
  const token = randomBytes(24).toString("hex");
  // `npm start`'s own settings (its log level included: a line per request), so that what
  // holds here holds for the embedded default.
  const wharf = await startWharf({
    logLevel: "log",
    vars: collecting
      ? { WHARF_GC: "on", WHARF_GC_GRACE_SECONDS: "5", WHARF_ADMIN_TOKEN: token, WHARF_DELETE_ENABLED: "true" }
      : {},
  });
  // The most file descriptors workerd held, sampled every 250 ms: a request that leaves a
  // socket behind shows here long before workerd runs out of them.
  const pids = workerdPids(wharf.pid);
  let peakDescriptors = 0;
  const sampler = setInterval(() => {
    let open = 0;
    for (const p of pids) {
      try { open += readdirSync(`/proc/${p}/fd`).length; } catch {}
    }
    peakDescriptors = Math.max(peakDescriptors, open);
  }, 250);
  const acknowledged = new Map(); // "repo:tag" -> manifest digest
  const deleted = []; // { repo, layer } of deleted images, whose layers pushes reuse
  const counts = { pushes: 0, pulls: 0, status5xx: 0, mismatches: 0, otherErrors: 0, deletes: 0, reused: 0, refused: 0, collections: 0, linksCollected: 0, blobsCollected: 0 };
  // What each "other error" was, to tell wharf's answers from the client's own failures.
  const otherKinds = new Map();
  const other = (what) => {
    counts.otherErrors++;
    otherKinds.set(what, (otherKinds.get(what) ?? 0) + 1);
  };
  const latencies = [];
  const timedRequest = async (method, path, options) => {
    const t = process.hrtime.bigint();
    const r = await request(wharf.base, method, path, options);
    latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (r.status >= 500) counts.status5xx++;
    return r;
  };
  const upload = async (repo, blob) => {
    const r = await timedRequest("POST", `/v2/${repo}/blobs/uploads/?digest=${sha256(blob)}`, { body: blob });
    if (r.status !== 201) other(`blob upload: ${r.status} ${r.code()}`);
    return r.status === 201;
  };
  const push = async (client, n) => {
    // With collection on, a third of pushes reuse a deleted image's layer as a client would:
    // HEAD it, and upload only if the registry lacks it.
    const reuse = collecting && deleted.length > 0 && Math.random() < 0.33 ? deleted[Math.floor(Math.random() * deleted.length)] : null;
    const repo = reuse?.repo ?? `load/c${client % 8}`;
    const tag = `t${client}-${n}`;
    const layer = reuse?.layer ?? randomBytes(1024 + Math.floor(Math.random() * 64 * 1024));
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", client, n }));
    const present = reuse && (await timedRequest("HEAD", `/v2/${repo}/blobs/${sha256(layer)}`)).status === 200;
    if (present) counts.reused++;
    for (const blob of present ? [config] : [layer, config]) {
      if (!(await upload(repo, blob))) return;
    }
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha256(layer), size: layer.length }],
    }));
    const put = () => timedRequest("PUT", `/v2/${repo}/manifests/${tag}`, { headers: { "Content-Type": OCI_MANIFEST }, body: manifest });
    let r = await put();
    // The collector took the reused layer between the HEAD and the push: the push is refused,
    // and the client uploads the layer and pushes again, as docker does.
    if (r.status === 400 && r.code() === "MANIFEST_BLOB_UNKNOWN" && present) {
      counts.refused++;
      if (!(await upload(repo, layer))) return;
      r = await put();
    }
    if (r.status !== 201) return other(`manifest PUT: ${r.status} ${r.code()}`);
    acknowledged.set(`${repo}:${tag}`, sha256(manifest));
    counts.pushes++;
  };
  const remove = async (key) => {
    const [repo, tag] = key.split(":");
    const digest = acknowledged.get(key);
    if (!digest) return;
    acknowledged.delete(key);
    const m = await timedRequest("GET", `/v2/${repo}/manifests/${digest}`, { headers: { Accept: OCI_MANIFEST } });
    const r = await timedRequest("DELETE", `/v2/${repo}/manifests/${digest}`);
    if (m.status !== 200 || r.status !== 202) return other(`delete: GET ${m.status}, DELETE ${r.status} ${r.code()}`);
    const layer = m.json().layers[0];
    const b = await timedRequest("GET", `/v2/${repo}/blobs/${layer.digest}`);
    if (b.status === 200) deleted.push({ repo, layer: b.body });
    counts.deletes++;
  };
  const collector = async () => {
    while (Date.now() < end) {
      // A run goes on in the queue: followed until it is done.
      const admin = { headers: { Authorization: `Bearer ${token}` } };
      let r = await request(wharf.base, "POST", "/_wharf/gc?dry-run=false", admin);
      while (r.status === 202 && Date.now() < end) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        r = await request(wharf.base, "GET", `/_wharf/gc/${r.json().id}`, admin);
      }
      if (r.status >= 500) counts.status5xx++;
      else if (r.status === 202) break;
      else if (r.status !== 200) other(`gc: ${r.status} ${r.code()}`);
      else {
        counts.collections++;
        counts.linksCollected += r.json().report.blobLinks.length;
        counts.blobsCollected += r.json().report.blobs.length;
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  };
  const pull = async (key) => {
    const [repo, tag] = key.split(":");
    const expected = acknowledged.get(key);
    // Deleted by another client meanwhile: a 404 is then the right answer.
    const mismatch = () => acknowledged.has(key) && counts.mismatches++;
    const m = await timedRequest("GET", `/v2/${repo}/manifests/${tag}`, { headers: { Accept: OCI_MANIFEST } });
    if (m.status !== 200 || sha256(m.body) !== expected) return mismatch();
    const manifest = m.json();
    for (const d of [manifest.config, ...manifest.layers]) {
      const b = await timedRequest("GET", `/v2/${repo}/blobs/${d.digest}`);
      if (b.status !== 200 || sha256(b.body) !== d.digest) return mismatch();
    }
    counts.pulls++;
  };
  const end = Date.now() + seconds * 1000;
  try {
    const working = Array.from({ length: clients }, async (_, client) => {
      for (let n = 0; Date.now() < end; n++) {
        const keys = [...acknowledged.keys()];
        const key = keys[Math.floor(Math.random() * keys.length)];
        const dice = Math.random();
        try {
          if (keys.length === 0 || dice < 0.3) await push(client, n);
          else if (collecting && dice < 0.4) await remove(key);
          else if (acknowledged.has(key)) await pull(key);
        } catch (e) {
          other(`client: ${e.message}${e.cause ? ` (${e.cause.code ?? e.cause.message})` : ""}`);
        }
      }
    });
    await Promise.all(collecting ? [...working, collector()] : working);
    // Every acknowledged push is still there, exactly; with collection on, blobs included.
    let lost = 0;
    for (const [key, digest] of acknowledged) {
      const [repo, tag] = key.split(":");
      const r = await request(wharf.base, "GET", `/v2/${repo}/manifests/${tag}`, { headers: { Accept: OCI_MANIFEST } });
      let whole = r.status === 200 && r.headers.get("docker-content-digest") === digest;
      if (whole && collecting) {
        for (const d of [r.json().config, ...r.json().layers]) {
          const b = await request(wharf.base, "GET", `/v2/${repo}/blobs/${d.digest}`);
          whole &&= b.status === 200 && sha256(b.body) === d.digest;
        }
      }
      if (!whole) lost++;
    }
    latencies.sort((a, b) => a - b);
    const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))].toFixed(1);
    console.log(`\nLoad through the local server (scripts/serve.mjs), ${new Date().toISOString().slice(0, 10)}, ${cpus().length} × ${cpus()[0].model}: ${clients} clients, ${seconds} s`);
    console.log("| pushes | pulls (verified) | requests/s | p50 ms | p99 ms | 5xx | digest mismatches | other errors | acknowledged tags lost | workerd's peak descriptors |");
    console.log("|---|---|---|---|---|---|---|---|---|---|");
    console.log(`| ${counts.pushes} | ${counts.pulls} | ${(latencies.length / seconds).toFixed(0)} | ${pct(50)} | ${pct(99)} | ${counts.status5xx} | ${counts.mismatches} | ${counts.otherErrors} | ${lost} | ${peakDescriptors} |`);
    if (collecting) {
      console.log(`\nWith garbage collection every 2 s: ${counts.collections} collections removing ${counts.linksCollected} blob links and ${counts.blobsCollected} blobs, ${counts.deletes} images deleted, ${counts.reused} pushes reusing a deleted image's layer, ${counts.refused} of them refused once (layer collected in between) and pushed again`);
    }
    for (const [what, n] of otherKinds) console.log(`other error, ${n}x: ${what}`);
    if (counts.status5xx || counts.mismatches || lost) process.exitCode = 1;
  } finally {
    clearInterval(sampler);
    await wharf.stop();
  }
}

async function startup() {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
  const wasm = readFileSync(new URL("../build/index_bg.wasm", import.meta.url));
  const js = readFileSync(new URL("../build/index.js", import.meta.url));
  const starts = [];
  for (let i = 0; i < rounds; i++) {
    const t = process.hrtime.bigint();
    const wharf = await startWharf();
    starts.push(Number(process.hrtime.bigint() - t) / 1e6);
    await wharf.stop();
  }
  // Compile alone (`new WebAssembly.Module`), then what the Worker's first request waits for on a
  // fresh isolate: the bindings' module evaluated and `initSync` (instantiation and start). V8
  // compiles functions lazily, on first call, by default; the eager figure
  // (--no-wasm-lazy-compilation) is the whole module's baseline compile.
  const compiles = [];
  const inits = [];
  for (let i = 0; i < rounds * 4; i++) {
    let t = process.hrtime.bigint();
    const module = new WebAssembly.Module(wasm);
    compiles.push(Number(process.hrtime.bigint() - t) / 1e6);
    const bindings = await import(`../build/index.js?round=${i}`);
    t = process.hrtime.bigint();
    bindings.initSync({ module });
    inits.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  const eagerScript = `const b = require("fs").readFileSync(process.argv[1]); const t = process.hrtime.bigint();
    new WebAssembly.Module(b); console.log(Number(process.hrtime.bigint() - t) / 1e6);`;
  const eager = [];
  for (let i = 0; i < rounds * 4; i++) {
    const wasmPath = new URL("../build/index_bg.wasm", import.meta.url).pathname;
    eager.push(Number(await exec(process.execPath, ["--no-wasm-lazy-compilation", "-e", eagerScript, wasmPath])));
  }
  const kib = (n) => (n / 1024).toFixed(1);
  console.log(`\nStart-up of the release bundle, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} × ${cpus()[0].model}, median of ${rounds} (V8 figures of ${rounds * 4})`);
  console.log("| bundle (wasm + JS) gzip | local server cold start to first GET /v2/ | wasm compile, lazy (V8 default) | wasm compile, eager | instantiate + start |");
  console.log("|---|---|---|---|---|");
  const gzip = gzipSync(wasm, { level: 9 }).length + gzipSync(js, { level: 9 }).length;
  console.log(`| ${kib(gzip)} KiB | ${median(starts).toFixed(0)} ms | ${median(compiles).toFixed(1)} ms | ${median(eager).toFixed(1)} ms | ${median(inits).toFixed(1)} ms |`);
}

/** CPU time (user + system) of the processes, in milliseconds. */
function cpuMs(pids) {
  const tick = 1000 / 100; // USER_HZ
  let total = 0;
  for (const p of pids) {
    const fields = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1].split(" ");
    total += (Number(fields[11]) + Number(fields[12])) * tick;
  }
  return total;
}

/**
 * CPU per request of each kind: the workerd process's CPU time (user + system) over a run of
 * one kind of request, sent one after another, divided by their number. workerd also runs the
 * local R2 and KV simulators, so each figure is also given above a reference of the same run
 * that does that simulator work without wharf's: GET /v2/ (no storage) for most, the test
 * build's verified R2 put of the same bytes for uploads. Cloudflare bills the Worker's own CPU.
 */
async function cpu() {
  const count = Number(process.env.BENCH_REQUESTS ?? 200);
  // The test build: its baseline put (one R2 put of a body, verified by R2, no wasm hashing)
  // is what an upload's CPU is measured against.
  const wharf = await startWharf({ selftest: true, vars: { WHARF_UI: "true", WHARF_DELETE_ENABLED: "true" } });
  const pids = workerdPids(wharf.pid);
  const req = (method, path, opts) => request(wharf.base, method, path, opts);
  const expect = async (what, promise, status) => {
    const r = await promise;
    if (r.status !== status) throw new Error(`${what}: ${r.status} ${r.body}`);
    return r;
  };
  try {
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
    const image = await seed(wharf.base, "bench/app", config, randomBytes(MiB));
    const oci = { headers: { Accept: OCI_MANIFEST } };
    const mib = randomBytes(MiB);
    let n = 0;
    const session = async () => (await expect("POST", req("POST", "/v2/bench/up/blobs/uploads/"), 202)).headers.get("location");
    const patching = (size) => {
      const chunk = randomBytes(size * MiB);
      let location;
      let offset = 0;
      return {
        count: Math.max(6, Math.floor(count / (2 * size))),
        async before() {
          location = await session();
          offset = 0;
        },
        async send() {
          const range = `${offset}-${offset + chunk.length - 1}`;
          const r = await expect("PATCH", req("PATCH", location, { headers: { "Content-Range": range }, body: chunk }), 202);
          location = r.headers.get("location");
          offset += chunk.length;
        },
      };
    };
    const baselinePut = (size) => {
      const body = randomBytes(size * MiB);
      return {
        count: Math.max(6, Math.floor(count / (2 * size))),
        send: () => {
          body.writeUInt32BE(n++, 0);
          return expect("put", req("PUT", `/_wharf/selftest/put?digest=${sha256(body)}`, { body }), 201);
        },
      };
    };
    const kinds = [
      ["GET /v2/", { send: () => expect("/v2/", req("GET", "/v2/"), 200) }],
      ["HEAD manifest by tag", { send: () => expect("HEAD", req("HEAD", "/v2/bench/app/manifests/v1", oci), 200) }],
      ["GET manifest by tag", { send: () => expect("GET", req("GET", "/v2/bench/app/manifests/v1", oci), 200) }],
      ["GET manifest by digest", { send: () => expect("GET", req("GET", `/v2/bench/app/manifests/${image.digest}`, oci), 200) }],
      ["PUT manifest (a new tag each)", {
        send: () => expect("PUT", req("PUT", `/v2/bench/app/manifests/t${n++}`, { headers: { "Content-Type": OCI_MANIFEST }, body: image.manifest }), 201),
      }],
      ["GET tags/list", { send: () => expect("tags", req("GET", "/v2/bench/app/tags/list?n=100"), 200) }],
      ["GET _catalog", { send: () => expect("catalog", req("GET", "/v2/_catalog"), 200) }],
      ["GET 1 MiB blob", { send: () => expect("blob", req("GET", `/v2/bench/app/blobs/${image.layer}`), 200) }],
      ["baseline: R2 put of 1 MiB", baselinePut(1)],
      ["POST 1 MiB blob, monolithic", {
        baseline: "baseline: R2 put of 1 MiB",
        send: () => {
          const body = Buffer.concat([mib.subarray(0, MiB - 8), Buffer.from((n++).toString().padStart(8, "0"))]);
          return expect("POST", req("POST", `/v2/bench/up/blobs/uploads/?digest=${sha256(body)}`, { body }), 201);
        },
      }],
      ["baseline: R2 put of 5 MiB", baselinePut(5)],
      ["PATCH 5 MiB chunk", { ...patching(5), baseline: "baseline: R2 put of 5 MiB" }],
      ["baseline: R2 put of 16 MiB", baselinePut(16)],
      ["PATCH 16 MiB chunk", { ...patching(16), baseline: "baseline: R2 put of 16 MiB" }],
      ["UI repository page", { send: () => expect("ui", req("GET", "/ui/repo/bench/app"), 200) }],
    ];
    // Warm-up: V8 compiles the hot wasm again in the background, on CPU this process counts.
    for (const [, kind] of kinds) {
      await kind.before?.();
      for (let i = 0; i < (kind.count ? 2 : 50); i++) await kind.send();
    }
    await new Promise((r) => setTimeout(r, 2000));
    const rows = [];
    for (const [name, kind] of kinds) {
      const times = kind.count ?? count;
      await kind.before?.();
      const start = cpuMs(pids);
      for (let i = 0; i < times; i++) await kind.send();
      rows.push({ name, times, ms: (cpuMs(pids) - start) / times, baseline: kind.baseline ?? "GET /v2/" });
      console.error(`${name}: done`);
    }
    const ms = Object.fromEntries(rows.map((r) => [r.name, r.ms]));
    console.log(`\nCPU per request on the local server, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} × ${cpus()[0].model}`);
    console.log("| request | requests | workerd CPU per request | measured against | above it |");
    console.log("|---|---|---|---|---|");
    for (const r of rows) {
      const above = r.name === r.baseline ? "" : `${(r.ms - ms[r.baseline]).toFixed(2)} ms`;
      console.log(`| ${r.name} | ${r.times} | ${r.ms.toFixed(2)} ms | ${r.name === r.baseline ? "" : r.baseline} | ${above} |`);
    }
  } finally {
    await wharf.stop();
  }
}

/**
 * A registry at scale: 10,000 repositories of 10 manifests each (BENCH_REPOS,
 * BENCH_MANIFESTS), all but the last tagged, and one repository of 100,000 tags (BENCH_TAGS),
 * written straight into the local R2 and KV under the keys wharf writes (from inside workerd):
 * hours of pushes through HTTP otherwise. Then, on the local server: the first and a deep page
 * of tags/list and of _catalog (median latency of 40 requests each, and the storage operations
 * the self-test build counts), a garbage collection over all of it through the local GC queue
 * (wall time, steps by phase from their log lines, the most operations in one), and the
 * Worker's wasm memory.
 */
async function scale() {
  const repos = Number(process.env.BENCH_REPOS ?? 10_000);
  const perRepo = Number(process.env.BENCH_MANIFESTS ?? 10);
  const tagCount = Number(process.env.BENCH_TAGS ?? 100_000);
  const state = mkdtempSync(join(tmpdir(), "wharf-scale-"));
  const started = process.hrtime.bigint();
  // BENCH_STATE keeps a copy of the filled registry there, and a later run starts from that
  // copy instead of filling again (the full size takes minutes to fill).
  const kept = process.env.BENCH_STATE;
  const reused = Boolean(kept && existsSync(kept));
  if (reused) cpSync(kept, state, { recursive: true });
  else {
    await fillAtScale(state, repos, perRepo, tagCount);
    if (kept) cpSync(state, kept, { recursive: true });
  }
  const filled = Number(process.hrtime.bigint() - started) / 1e9;
  console.error(`${reused ? `copied from ${kept}` : "filled"} in ${filled.toFixed(0)} s`);
  const token = randomBytes(24).toString("hex");
  const wharf = await startWharf({
    selftest: true,
    state,
    vars: { WHARF_GC: "on", WHARF_GC_UNTAGGED: "true", WHARF_GC_GRACE_SECONDS: "0", WHARF_ADMIN_TOKEN: token, WHARF_MAX_PAGE_SIZE: "1000", WHARF_LOG_LEVEL: "info" },
    logLevel: "info",
  });
  try {
    // Each page, and the floor of it: the one R2 listing it needs, made by the self-test build
    // (the local R2 filters a listing's prefix by scanning its key index from the start, so the
    // floor's own latency grows with a page's position). Requests take turns, so that a slow
    // moment of the machine hits every page alike.
    const deepTag = `t${String(tagCount - 150).padStart(6, "0")}`;
    const lastRepo = `scale/r${String(repos - 150).padStart(5, "0")}`;
    const tagKeys = "repositories/scale/tags/_tags/";
    const floor = (prefix, after) => `/_wharf/selftest/list?n=100&prefix=${encodeURIComponent(prefix)}${after ? `&after=${encodeURIComponent(prefix + after)}` : ""}`;
    const pages = [
      ["tags/list, first page (n=100)", "/v2/scale/tags/tags/list?n=100", floor(tagKeys)],
      [`tags/list, after tag ${tagCount - 150} (n=100)`, `/v2/scale/tags/tags/list?n=100&last=${deepTag}`, floor(tagKeys, deepTag)],
      ["_catalog, first page (n=100)", "/v2/_catalog?n=100", floor("catalog/")],
      [`_catalog, after repository ${repos - 150} (n=100)`, `/v2/_catalog?n=100&last=${lastRepo}`, floor("catalog/", lastRepo)],
    ];
    const times = pages.map(() => ({ wharf: [], floor: [] }));
    const operations = [];
    const timed = async (path) => {
      const t = process.hrtime.bigint();
      const r = await request(wharf.base, "GET", path);
      if (r.status !== 200) throw new Error(`${path}: ${r.status} ${r.body}`);
      return [Number(process.hrtime.bigint() - t) / 1e6, r];
    };
    for (let i = 0; i < 41; i++) {
      for (const [p, [, path, floorPath]] of pages.entries()) {
        const [ms, r] = await timed(path);
        const [floorMs] = await timed(floorPath);
        operations[p] = r.headers.get("x-wharf-operations");
        // The first round warms caches.
        if (i > 0) times[p].wharf.push(ms), times[p].floor.push(floorMs);
      }
    }
    const rows = pages.map(([what], p) => [what, median(times[p].wharf), median(times[p].floor), operations[p]]);
    console.log(`\nA registry at scale on the local server, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} × ${cpus()[0].model}: ${repos} repositories of ${perRepo} tagged manifests, and one of ${tagCount} tags (filled in ${filled.toFixed(0)} s); median of 40`);
    console.log("| page | wharf | floor (one R2 listing) | wharf / floor | storage operations |");
    console.log("|---|---|---|---|---|");
    for (const [what, ms, floorMs, ops] of rows) console.log(`| ${what} | ${ms.toFixed(1)} ms | ${floorMs.toFixed(1)} ms | ${(ms / floorMs).toFixed(2)} | ${ops} |`);
    const ratio = (deep, first, i) => (rows[deep][i] / rows[first][i]).toFixed(2);
    console.log(`\nDeep page against first: tags/list ${ratio(1, 0, 1)}x (floor ${ratio(1, 0, 2)}x), _catalog ${ratio(3, 2, 1)}x (floor ${ratio(3, 2, 2)}x)`);
    // A run in steps through the local GC queue, followed until it is done.
    const admin = { Authorization: `Bearer ${token}` };
    // A wasm memory only grows: what it is after the collection against before says what the
    // collection kept.
    const memoryNow = async () => (await request(wharf.base, "GET", "/_wharf/selftest/memory")).json().wasmMemoryBytes;
    const memoryBefore = await memoryNow();
    const gcStarted = process.hrtime.bigint();
    const started = await request(wharf.base, "POST", "/_wharf/gc?dry-run=false", { headers: admin });
    if (started.status !== 202) throw new Error(`gc: ${started.status} ${started.body}`);
    let run = started.json();
    // A failed step is retried a minute later (at most five times): a run with no step for
    // ten minutes has stopped, and the benchmark says where, with the steps' errors.
    let seen = { steps: -1, at: Date.now() };
    let errors = 0;
    const poll = Number(process.env.BENCH_POLL_MS ?? 500);
    // The server's log, kept when the run cannot be followed to its end.
    const keepLog = () => {
      const saved = join(tmpdir(), `wharf-scale-${run.id}.log`);
      writeFileSync(saved, wharf.log());
      return saved;
    };
    while (run.phase.name !== "done") {
      await new Promise((r) => setTimeout(r, poll));
      const read = await request(wharf.base, "GET", `/_wharf/gc/${run.id}`, { headers: admin }).catch((e) => {
        throw new Error(`gc: the run's state cannot be read (the server's log is in ${keepLog()})`, { cause: e });
      });
      run = read.json();
      const failures = wharf.log().split("\n")
        .filter((l) => /gc step failed|gc queue|panicked|uncaught|exceeded|RuntimeError|Dropped message|QUEUE \S+-gc 0\//i.test(l));
      for (const line of failures.slice(errors)) console.error(line);
      errors = failures.length;
      if (run.steps !== seen.steps) seen = { steps: run.steps, at: Date.now() };
      else if (Date.now() - seen.at > 10 * 60_000) {
        throw new Error(`gc stopped (the server's log is in ${keepLog()}): ${JSON.stringify({ ...run, report: undefined })}`);
      }
    }
    const gcSeconds = Number(process.hrtime.bigint() - gcStarted) / 1e9;
    const report = run.report;
    const memory = await memoryNow();
    console.log(`Garbage collection (untagged on): ${gcSeconds.toFixed(1)} s in ${run.steps} steps, ${run.operations} storage operations, at most ${run.maxStepOperations} in one step; ${report.manifests.length + report.more} items removed (${report.manifests.length} manifests, ${report.blobLinks.length} links, ${report.blobs.length} blobs listed)`);
    // The steps' log lines: how many worked in each phase, and the most operations of one.
    const steps = wharf.log().split("\n").filter((l) => l.includes('"gc step"') && l.includes(run.id))
      .map((l) => JSON.parse(l.slice(l.indexOf("{"))));
    const phases = new Map();
    for (const step of steps) {
      const p = phases.get(step.phase) ?? { steps: 0, most: 0, ms: 0 };
      phases.set(step.phase, { steps: p.steps + 1, most: Math.max(p.most, step.operations), ms: p.ms + step.durationMs });
    }
    console.log("| phase | steps | most operations in a step | time in steps |");
    console.log("|---|---|---|---|");
    for (const [phase, p] of phases) console.log(`| ${phase} | ${p.steps} | ${p.most} | ${(p.ms / 1000).toFixed(1)} s |`);
    console.log(`Wasm memory: ${(memoryBefore / MiB).toFixed(1)} MiB before the collection, ${(memory / MiB).toFixed(1)} MiB after`);
  } finally {
    await wharf.stop();
    rmSync(state, { recursive: true, force: true });
  }
}

/**
 * Writes a repository of the registry of `scale` from inside workerd, where the R2 and KV
 * bindings are local calls (from node, each write would cross Miniflare's proxy). A request
 * names the repository, its manifests, and its tags: `{repo, manifests, tags: [[tag, manifest
 * index]...], blobs}`; manifests and their digests are made here.
 */
const FILL_WORKER = `
const OCI = "${OCI_MANIFEST}";
const hex = async (text) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)))]
  .map((b) => b.toString(16).padStart(2, "0")).join("");
async function all(items, width, one) {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => { while (next < items.length) await one(items[next++]); }));
}
export default {
  async fetch(request, env) {
    const { repo, manifests, tags, blobs, catalog } = await request.json();
    const writes = [];
    if (catalog) {
      writes.push(() => env.BUCKET.put("catalog/" + repo, ""));
      for (const b of blobs) {
        // The holder, then the link, as a push writes them.
        const holder = "holders/" + b.link.object.slice("blobs/by-upload/".length) + "/" + repo;
        writes.push(async () => {
          await env.BUCKET.put(holder, "", { customMetadata: { digest: b.digest } });
          await env.BUCKET.put("repositories/" + repo + "/_layers/sha256/" + b.digest.slice(7), "", { customMetadata: b.link });
        });
      }
    }
    const stored = [];
    for (let j = 0; j < manifests; j++) {
      const text = JSON.stringify({
        schemaVersion: 2, mediaType: OCI,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: blobs[0].digest, size: blobs[0].size },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: blobs[1].digest, size: blobs[1].size }],
        annotations: { seed: repo + " " + j },
      });
      const h = await hex(text);
      stored.push({ digest: "sha256:" + h, size: new TextEncoder().encode(text).length });
      writes.push(() => env.BUCKET.put("repositories/" + repo + "/_manifests/sha256/" + h, text, { httpMetadata: { contentType: OCI } }));
    }
    for (const [name, index] of tags) {
      const m = stored[index] ?? stored[0];
      const record = { digest: m.digest, mediaType: OCI, size: String(m.size) };
      // The index entry, then the tag, as a push writes them.
      writes.push(() => env.BUCKET.put("repositories/" + repo + "/_tagged/sha256/" + m.digest.slice(7) + "/" + name, ""));
      writes.push(() => env.BUCKET.put("repositories/" + repo + "/_tags/" + name, "", { customMetadata: record }));
      writes.push(() => env.TAGS.put("tags/" + repo + ":" + name, m.digest, { metadata: { ...record, size: m.size } }));
    }
    await all(writes, 32, (w) => w());
    return new Response(String(writes.length));
  },
};`;

/** Writes the registry of `scale` into the local R2 and KV persisted under `state`. */
async function fillAtScale(state, repos, perRepo, tagCount) {
  const { Miniflare } = await import("miniflare");
  const { unstable_getMiniflareWorkerOptions } = await import("wrangler");
  const { workerOptions } = unstable_getMiniflareWorkerOptions(new URL("../wrangler.toml", import.meta.url).pathname);
  const mf = new Miniflare({
    modules: true,
    script: FILL_WORKER,
    compatibilityDate: "2026-05-01",
    r2Buckets: workerOptions.r2Buckets,
    kvNamespaces: workerOptions.kvNamespaces,
    defaultPersistRoot: join(state, "v3"),
  });
  try {
    const bucket = await mf.getR2Bucket("BUCKET");
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
    const layer = randomBytes(1024);
    const blobs = [];
    for (const bytes of [config, layer]) {
      const digest = sha256(bytes);
      const object = `blobs/by-upload/${randomBytes(16).toString("hex")}`;
      // Through Miniflare's proxy: plain arrays, not Node Buffers.
      await bucket.put(object, new Uint8Array(bytes));
      const link = { object, size: String(bytes.length) };
      await bucket.put(`digests/sha256/${digest.slice(7)}`, "", { customMetadata: link });
      blobs.push({ digest, size: bytes.length, link });
    }
    // Written as this version writes a registry: holders and the index of tags by manifest
    // included, so the collection has no one-time phase to run first.
    await bucket.put("migrations/indexes", "done");
    // Every tag is in R2 (the fill writes both copies): untagged collection need not wait.
    await bucket.put("migrations/tags", "done");
    const fill = async (job) => {
      const r = await mf.dispatchFetch("http://fill/", { method: "POST", body: JSON.stringify({ blobs, ...job }) });
      if (!r.ok) throw new Error(`fill ${job.repo}: ${r.status} ${await r.text()}`);
      await r.text();
    };
    const inParallel = async (count, width, one) => {
      let next = 0;
      await Promise.all(Array.from({ length: width }, async () => {
        while (next < count) await one(next++);
      }));
    };
    // The repository of many tags, 2,000 tags a request (6,000 writes).
    const chunk = 2000;
    await inParallel(Math.ceil(tagCount / chunk), 2, (c) => {
      const names = [];
      for (let i = c * chunk; i < Math.min(tagCount, (c + 1) * chunk); i++) names.push([`t${String(i).padStart(6, "0")}`, 0]);
      return fill({ repo: "scale/tags", manifests: 1, tags: names, catalog: c === 0 });
    });
    // Every repository's last manifest untagged: garbage for the collection (untagged on).
    await inParallel(repos, 4, (i) => {
      const tags = Array.from({ length: perRepo - 1 }, (_, j) => [`v${j}`, j]);
      return fill({ repo: `scale/r${String(i).padStart(5, "0")}`, manifests: perRepo, tags, catalog: true });
    });
  } finally {
    await mf.dispose();
  }
}

if (!existsSync(new URL("../build/index.js", import.meta.url))) {
  console.error("build/index.js missing: npm run bench builds it first");
  process.exit(1);
}
const modes = { pulls, load, uploads, startup, cpu, scale };
if (!modes[mode]) {
  console.error(`unknown mode ${mode}; known: ${Object.keys(modes).join(", ")}`);
  process.exit(2);
}
await modes[mode]();
