// `npm run hash-password -- <password>`: prints the stored form of a password for WHARF_USERS
// (PBKDF2-HMAC-SHA256, random 16-byte salt, 10,000 iterations: what wharf's check costs and
// expects; see src/auth/secret.rs).
import { pbkdf2Sync, randomBytes } from "node:crypto";

const password = process.argv[2];
if (!password) {
  console.error("usage: npm run hash-password -- <password>");
  process.exit(2);
}
const iterations = 10_000;
const salt = randomBytes(16);
const hash = pbkdf2Sync(password, salt, iterations, 32, "sha256");
console.log(`pbkdf2-sha256$${iterations}$${salt.toString("hex")}$${hash.toString("hex")}`);
