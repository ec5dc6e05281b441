// Shared set-up of the end-to-end tests: start the built Worker as `npm start` serves it
// (scripts/serve.mjs: workerd with local R2 and KV, the bindings of wrangler.toml) on a free port, optionally with extra
// [vars], and stop it afterwards. The Worker must already be built (scripts/build.sh).

import { spawn, execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import http from "node:http";
import net from "node:net";
import { Readable } from "node:stream";
import tls from "node:tls";
import { createHash } from "node:crypto";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const ACCEPT_ALL = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");

export const sha256 = (bytes) => "sha256:" + createHash("sha256").update(bytes).digest("hex");

/**
 * A free port below the kernel's ephemeral range (see /proc/sys/net/ipv4/ip_local_port_range),
 * so that no process binding port 0 (workerd opens several) can take it between this check
 * and the server's bind.
 */
export async function freePort() {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const free = await new Promise((resolve) => {
      const s = net.createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

/**
 * Starts wharf; resolves to { base, host, stop, kill } once GET /v2/ answers. With `state`, the
 * local R2/KV state lives there and is kept on stop (a restart can reuse it); else in a
 * temporary directory removed on stop. `logLevel: "log"` shows the Worker's own log lines.
 */
export async function startWharf({ vars = {}, args: extra = [], state: given, logLevel = "warn", selftest = false, ready = [200, 401] } = {}) {
  // `selftest`: the build with the self-test endpoints (build/selftest/), which are not in the
  // release bundle, with WHARF_SELFTEST on.
  const entry = selftest ? join(ROOT, "build", "selftest", "entry.mjs") : join(ROOT, "build", "index.js");
  if (!existsSync(entry)) {
    throw new Error(`${entry} is missing: run scripts/build.sh --selftest first`);
  }
  if (selftest) vars = { ...vars, WHARF_SELFTEST: "true" };
  const port = await freePort();
  const state = given ?? mkdtempSync(join(tmpdir(), "wharf-e2e-"));
  // What `npm start` serves (scripts/serve.mjs), on a port of its own.
  const args = [
    join(ROOT, "scripts", "serve.mjs"), ...(selftest ? [entry] : []), "--ip", "127.0.0.1", "--port", String(port),
    "--persist-to", state, "--log-level", logLevel,
  ];
  for (const [k, v] of Object.entries(vars)) args.push("--var", `${k}:${v}`);
  args.push(...extra);
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
    env: { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false", WRANGLER_HIDE_BANNER: "true" },
  });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited: ${log}`);
    try {
      const r = await fetch(`${base}/v2/`);
      // 401: access control is on, and /v2/ challenges anonymous clients. `ready` names
      // other statuses that mean the server runs (500 for a configuration error).
      if (ready.includes(r.status)) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`the server did not answer in 60 s: ${log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const end = (signal) => {
    const exited = child.exitCode !== null ? Promise.resolve() : new Promise((r) => child.once("exit", r));
    try { process.kill(-child.pid, signal); } catch {}
    return exited;
  };
  return {
    base,
    pid: child.pid,
    host: `127.0.0.1:${port}`,
    /** The --persist-to directory: local R2, KV and Cache API state. */
    state,
    log: () => log,
    /** Stops the server; resolves once it exited (and its temporary state is removed). */
    stop: () => end("SIGTERM").then(() => given || rmSync(state, { recursive: true, force: true, maxRetries: 3 })),
    /** Kills the server and workerd at once, as a crash would; the state stays. */
    kill: () => end("SIGKILL"),
  };
}

/**
 * A TLS front for `target` (host:port) with a throw-away self-signed certificate. skopeo tries
 * HTTPS first and waits ~10 s for workerd's plain port to fail the handshake; through this
 * front, with --tls-verify=false, it gets an answer at once.
 */
export async function startTlsFront(target) {
  const dir = mkdtempSync(join(tmpdir(), "wharf-tls-"));
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-days", "1",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
  ], { stdio: "ignore" });
  // `target` may be a function: the front can listen before its target is known.
  const resolve = () => (typeof target === "function" ? target() : target).split(":");
  const server = tls.createServer(
    { key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) },
    (client) => {
      const [host, port] = resolve();
      const upstream = net.connect(Number(port), host);
      client.pipe(upstream).pipe(client);
      const close = () => { client.destroy(); upstream.destroy(); };
      client.on("error", close);
      upstream.on("error", close);
    },
  );
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return { host: `127.0.0.1:${port}`, stop: () => server.close() };
}

/**
 * Whether fetch failed because the connection it reused was already closed by the server,
 * before any answer. workerd closes a connection after 5 s idle. A client whose event loop was
 * busy past that (a large synchronous hash in a test, a loaded machine delaying node's own
 * 4 s idle timer) sends its next request on that connection: undici then fails with
 * UND_ERR_SOCKET ("other side closed"), and fetch with "fetch failed".
 */
const closedUnderUs = (e) => e?.cause?.code === "UND_ERR_SOCKET";

/**
 * fetch against wharf returning { status, headers, body (Buffer), json() }. A request whose
 * reused connection the server had closed (see `closedUnderUs`) is sent once more, as real
 * clients do (Go's net/http retries a request that failed on a reused connection): a body
 * held in memory can be sent again. A streamed body cannot: send it with `streamRequest`.
 */
export async function request(base, method, path, { headers = {}, body } = {}) {
  const send = () => fetch(base + path, { method, headers, body, redirect: "manual" });
  const r = await send().catch((e) => (closedUnderUs(e) ? send() : Promise.reject(e)));
  const buf = Buffer.from(await r.arrayBuffer());
  return {
    status: r.status,
    headers: r.headers,
    body: buf,
    json: () => JSON.parse(buf.toString("utf8")),
    code: () => { try { return JSON.parse(buf.toString("utf8")).errors[0].code; } catch { return undefined; } },
  };
}

/**
 * Sends a streamed body (a web ReadableStream) on a connection of its own, never one reused
 * from a pool (see `closedUnderUs`): a stream cannot be sent twice. Resolves to
 * { status, headers (a Headers), body (Buffer) }.
 */
export function streamRequest(base, method, path, stream, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(base + path, { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) h.set(k, Array.isArray(v) ? v.join(", ") : v);
        resolve({ status: res.statusCode, headers: h, body: Buffer.concat(chunks) });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    Readable.fromWeb(stream).pipe(req);
  });
}

/**
 * Runs a command asynchronously (the TLS front lives in this process: a synchronous child
 * would block it), resolving to stdout; rejects with stderr on failure.
 */
export function run(cmd, args, { timeout = 120_000, env = process.env } = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: "utf8", timeout, env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(" ")} failed: ${stdout}\n${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

export { writeFileSync };
