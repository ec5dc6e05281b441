// `npm run hash-password -- <password>`: prints the stored form of a password for WHARF_USERS:
// PBKDF2-HMAC-SHA256 with a random 16-byte salt and 100,000 iterations, the most that workerd's
// WebCrypto derives natively (wharf verifies with `crypto.subtle.deriveBits`). OWASP's password
// storage cheat sheet asks 600,000 of PBKDF2-HMAC-SHA256; `--iterations N` sets another count,
// and a count above workerd's cap is verified in wasm instead, about 4 times slower
// (docs/access-control.md). The count is part of the hash, so hashes of any count keep verifying.
import { pbkdf2Sync, randomBytes } from "node:crypto";

const args = process.argv.slice(2);
let iterations = 100_000;
const at = args.indexOf("--iterations");
if (at !== -1) {
  iterations = Number(args[at + 1]);
  args.splice(at, 2);
}
const password = args[0];
if (!password || !Number.isInteger(iterations) || iterations < 1) {
  console.error("usage: npm run hash-password -- [--iterations N] <password>");
  process.exit(2);
}
const salt = randomBytes(16);
const hash = pbkdf2Sync(password, salt, iterations, 32, "sha256");
console.log(`pbkdf2-sha256$${iterations}$${salt.toString("hex")}$${hash.toString("hex")}`);
