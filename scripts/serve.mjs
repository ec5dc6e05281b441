// Serves the built Worker locally: what `npm start` runs (after scripts/build.sh), and what the
// end-to-end tests and the benchmark start.
//
// It is `wrangler dev --local` without wrangler's proxy worker: the same workerd and the same
// local R2, KV and Cache simulators (Miniflare, which wrangler embeds), configured from
// wrangler.toml by wrangler's own loader, with state in the same place (.wrangler/state/v3).
// wrangler dev puts a second Worker in front of the one it serves, to hold requests while it
// rebuilds; when a client breaks off a request body, that proxy loses the whole request and
// answers 503 "Your worker restarted mid-request", whatever wharf answered. Without it, the
// client gets wharf's own answer, as from a deployed Worker. (wharf needs no rebuild watcher:
// `npm start` builds once.)
//
//   node scripts/serve.mjs [SCRIPT] [--port N] [--ip ADDR] [--var KEY:VALUE ...] [--env NAME]
//                          [--persist-to DIR] [--log-level debug|info|log|warn|error|none]
//
// The flags are wrangler dev's, with its defaults (127.0.0.1:8787). SCRIPT replaces wrangler.toml's
// `main` (the self-test build). Cron triggers run on `GET /cdn-cgi/handler/scheduled`, as under
// wrangler dev (its `/__scheduled` comes from its proxy). Other wrangler dev flags are accepted
// and ignored, with a warning.
import { existsSync } from "node:fs";
import http from "node:http";
import { resolve } from "node:path";
import { Log, LogLevel, Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";

const ROOT = resolve(import.meta.dirname, "..");
const LEVELS = {
  debug: LogLevel.DEBUG, info: LogLevel.INFO, log: LogLevel.INFO, warn: LogLevel.WARN,
  error: LogLevel.ERROR, none: LogLevel.NONE,
};
// A script to serve instead of wrangler.toml's `main`.
const isScript = (arg) => /\.m?js$/.test(arg) && existsSync(arg);
// The value of the flag before it, rather than a flag or the script.
const isValue = (arg) => arg !== undefined && !arg.startsWith("-") && !isScript(arg);

function parse(argv) {
  const options = { port: 8787, ip: "127.0.0.1", vars: {}, persistTo: ".wrangler/state", logLevel: "log" };
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].startsWith("--") && argv[i].includes("=") ? argv[i].split(/=(.*)/s) : [argv[i]];
    const next = () => value ?? argv[++i];
    switch (flag) {
      case "--port": options.port = Number(next()); break;
      case "--ip": options.ip = next(); break;
      case "--env": case "-e": options.env = next(); break;
      case "--persist-to": options.persistTo = next(); break;
      case "--log-level": options.logLevel = next(); break;
      case "--var": {
        // `--var A:1 B:2` as well as `--var A:1 --var B:2`, as wrangler takes them.
        const pairs = [next()];
        while (value === undefined && isValue(argv[i + 1])) pairs.push(argv[++i]);
        for (const pair of pairs) {
          const colon = pair?.indexOf(":") ?? -1;
          if (colon < 1) throw new Error(`--var ${pair}: expected KEY:VALUE`);
          options.vars[pair.slice(0, colon)] = pair.slice(colon + 1);
        }
        break;
      }
      case "--local": case "--test-scheduled": break;
      default: {
        if (isScript(flag)) { options.script = resolve(flag); break; }
        // Another wrangler dev flag (no proxy, inspector or remote mode here), with its value.
        const ignored = [argv[i]];
        if (flag.startsWith("-") && value === undefined && isValue(argv[i + 1])) ignored.push(argv[++i]);
        console.warn(`serve: ignoring ${ignored.join(" ")}, which this server does not take`);
      }
    }
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) throw new Error("--port: expected a port number");
  if (!(options.logLevel in LEVELS)) throw new Error(`--log-level: one of ${Object.keys(LEVELS).join(", ")}`);
  return options;
}

const options = parse(process.argv.slice(2));
const { workerOptions, main } = unstable_getMiniflareWorkerOptions(resolve(ROOT, "wrangler.toml"), options.env);
const level = LEVELS[options.logLevel];
const log = new Log(level);
// At level info or more detailed, one line per request, written by the Worker itself:
// WHARF_LOG_LEVEL `info` (unless --var sets it) logs a JSON line per request with console.log,
// which workerd writes to its stdout and Miniflare copies to ours.
// Not Miniflare's own request log (`logRequests`): that one sends each request's line from
// workerd back to this process as an HTTP request to Miniflare's loopback server, after the
// response, so that nothing waits for it. Under load, while this process is busy (printing to a
// terminal, say), those requests pile up, and workerd opens a connection for each one waiting:
// thousands of sockets, until workerd runs out of file descriptors ("Too many open files") and
// requests fail. A line on stdout needs no connection.
const requestLog = level >= LogLevel.INFO ? { WHARF_LOG_LEVEL: "info" } : {};
// Miniflare's local queues report each batch's outcome with a POST to Miniflare's loopback server
// in this process, and when that POST fails the queue never delivers again: its broker's flush
// (miniflare `queues/broker.worker.js`) rejects before it clears the batch it was sending.
// Node closes a keep-alive connection idle for 5 s (`keepAliveTimeout`), and workerd, busy with
// the consumer, can take that connection for its next POST in the moment before it reads the
// close: "Network connection lost". A chain of queue steps of about 5 s each (the collection's)
// then stops for good within a few hundred steps. So the loopback server, the one HTTP server
// Miniflare starts (the Worker is served by workerd), keeps a connection until workerd closes it.
const createServer = http.createServer;
http.createServer = (...args) => Object.assign(createServer(...args), { keepAliveTimeout: 0 });
const mf = new Miniflare({
  host: options.ip,
  port: options.port,
  log,
  logRequests: false,
  defaultPersistRoot: resolve(options.persistTo, "v3"),
  unsafeTriggerHandlers: true,
  // No request for Cloudflare's `request.cf` template (wharf reads none of it).
  cf: false,
  workers: [{
    name: "wharf",
    ...workerOptions,
    bindings: { ...workerOptions.bindings, ...requestLog, ...options.vars },
    modules: true,
    scriptPath: options.script ?? main,
    // The entry module imports wasm-bindgen's JS glue and the wasm (which wrangler would bundle).
    modulesRules: [...workerOptions.modulesRules, { type: "ESModule", include: ["**/*.js", "**/*.mjs"] }],
  }],
});
// Miniflare prints this line only with its own request log.
log.info(`Ready on ${(await mf.ready).origin}`);
http.createServer = createServer;
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => mf.dispose().finally(() => process.exit(0)));
}
