// Round trip with the Rust `oci-client` crate (tests/oci-client): monolithic and chunked
// pushes of a two-layer image, pulled back byte for byte. The crate is built by scripts/test.sh
// (cargo build --release); this test runs its binary against a fresh wharf.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ROOT, startWharf, run } from "./harness.mjs";

const binary = join(ROOT, "tests", "oci-client", "target", "release", "wharf-e2e-oci-client");
let wharf;

before(async () => {
  wharf = await startWharf();
});

after(() => wharf?.stop());

test("oci-client pushes and pulls an image monolithically and in chunks", async () => {
  assert.ok(existsSync(binary), `${binary} missing: build tests/oci-client first`);
  const out = await run(binary, ["e2e/oci-client"], { env: { ...process.env, WHARF_URL: wharf.host } });
  assert.match(out, /oci-client e2e: \d+ passed, 0 failed/);
  assert.doesNotMatch(out, /\[FAIL\]/);
});
