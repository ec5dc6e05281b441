// wharf's benchmark: `npm run bench -- <mode>`. Measures through `wrangler dev` (workerd with
// local R2/KV) on this machine; numbers are for comparison within one run, not absolute.
//
// Modes:
//   uploads  a 256 MiB blob pushed monolithic (one POST ?digest=) and in 16 MiB chunks
//            (POST, 16 PATCH, PUT; BENCH_SIZE_MIB, BENCH_CHUNK_MIB and BENCH_ROUNDS change the
//            blob size, the chunk size and the number of rounds), against the
//            baseline of a plain R2 put of the same bytes through the same Worker, in
//            interleaved rounds; MB/s (median of 6), the peak resident memory of the workerd
//            process above its idle level, and the Worker's wasm memory high-water mark.

import { randomBytes, createHash } from "node:crypto";
import { readFileSync, readdirSync, existsSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { cpus, tmpdir } from "node:os";
import { startWharf, request, run as exec } from "../tests/e2e/harness.mjs";

const MiB = 1 << 20;
const mode = process.argv[2] ?? "uploads";

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

/** An upload with curl (node's fetch breaks off bodies this large): returns the status. */
async function curl(method, url, file, headers = {}) {
  // "Expect:" off: curl otherwise waits a second for a "100 Continue" that workerd never sends.
  const args = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect:", "-X", method, url];
  // -T streams the file (--data-binary reads it whole into memory first, and fails at 1 GiB);
  // the explicit target keeps -T from appending the file's name to a URL ending in "/".
  const target = new URL(url);
  if (file) args.push("-T", file, "--request-target", target.pathname + target.search);
  for (const [k, v] of Object.entries(headers)) args.push("-H", `${k}: ${v}`);
  return Number(await exec("curl", args, { timeout: 600_000 }));
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
    "R2 put through the Worker (baseline)": async (base, digest) =>
      expect("baseline", await curl("PUT", `${base}/_wharf/selftest/put?digest=${digest}`, whole), 201),
    "monolithic POST ?digest=": async (base, digest) =>
      expect("monolithic", await curl("POST", `${base}/v2/bench/mono/blobs/uploads/?digest=${digest}`, whole), 201),
    "16 MiB chunks (POST, PATCH x16, PUT)": async (base, digest) => {
      const start = await request(base, "POST", "/v2/bench/chunked/blobs/uploads/");
      const location = base + start.headers.get("location");
      for (const [i, file] of chunks.entries()) {
        const range = `${i * chunk}-${(i + 1) * chunk - 1}`;
        expect("PATCH", await curl("PATCH", location, file, { "Content-Range": range }), 202);
      }
      expect("PUT", await curl("PUT", `${location}?digest=${digest}`), 201);
    },
  };
  // One wharf per scenario (each with its own memory figures), all started first; the rounds
  // then take the scenarios in turn, so a slow moment of the machine hits them all alike.
  const rows = [];
  try {
    for (const [name, run] of Object.entries(scenarios)) {
      const wharf = await startWharf({ vars: { WHARF_SELFTEST: "true" } });
      const pids = workerdPids(wharf.pid);
      rows.push({ name, run, wharf, pids, idle: memoryKiB(pids, "VmRSS"), speeds: [] });
    }
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
        row.speeds.push(size / MiB / (await timed(() => row.run(row.wharf.base, digest))));
      }
    }
    for (const row of rows) {
      row.mbps = median(row.speeds);
      row.growthMiB = (memoryKiB(row.pids, "VmHWM") - row.idle) / 1024;
      row.wasmMiB = (await request(row.wharf.base, "GET", "/_wharf/selftest/memory")).json().wasmMemoryBytes / MiB;
    }
  } finally {
    await Promise.all(rows.map((row) => row.wharf?.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
  const baseline = rows[0].mbps;
  console.log(`\nUploads of a ${size / MiB} MiB blob through wrangler dev, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} × ${cpus()[0].model}`);
  console.log(`| scenario | MB/s (median of ${ROUNDS}) | vs baseline | workerd peak RSS above idle | wasm memory |`);
  console.log("|---|---|---|---|---|");
  for (const r of rows) {
    const cells = [r.name, r.mbps.toFixed(0), `${(r.mbps / baseline).toFixed(2)}x`, `${r.growthMiB.toFixed(0)} MiB`, `${r.wasmMiB.toFixed(1)} MiB`];
    console.log(`| ${cells.join(" | ")} |`);
  }
  console.log("(workerd's RSS includes the local R2 simulator; the wasm memory is wharf's own high-water mark.)");
}

if (!existsSync(new URL("../build/index.js", import.meta.url))) {
  console.error("build/index.js missing: npm run bench builds it first");
  process.exit(1);
}
const modes = { uploads };
if (!modes[mode]) {
  console.error(`unknown mode ${mode}; known: ${Object.keys(modes).join(", ")}`);
  process.exit(2);
}
await modes[mode]();
