// The release bundle's size budget (<= 512 KiB gzip, as `wrangler deploy --dry-run` reports it,
// wasm and JavaScript together; docs/performance.md, "Size", says why), and that test code stays out
// of it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, run } from "./harness.mjs";

const BUDGET_KIB = 512;

test(`the release bundle is at most ${BUDGET_KIB} KiB gzip and holds no self-test code`, async () => {
  const out = mkdtempSync(join(tmpdir(), "wharf-dry-run-"));
  try {
    const env = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" };
    const log = await run(join(ROOT, "node_modules", ".bin", "wrangler"), ["deploy", "--dry-run", "--outdir", out], { env });
    const m = /Total Upload: ([\d.]+) KiB \/ gzip: ([\d.]+) KiB/.exec(log);
    assert.ok(m, `no size in wrangler's output:\n${log}`);
    const gzip = Number(m[2]);
    assert.ok(gzip <= BUDGET_KIB, `${gzip} KiB gzip, over the ${BUDGET_KIB} KiB budget`);
    const wasm = readFileSync(join(ROOT, "build", "index_bg.wasm")).toString("latin1");
    assert.ok(!wasm.includes("/_wharf/selftest"), "the release wasm carries the self-test endpoints");
    assert.ok(readFileSync(join(ROOT, "build", "selftest", "index_bg.wasm")).toString("latin1").includes("/_wharf/selftest"));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
