// Access control on workerd with real clients: skopeo with --creds / --dest-creds through the
// Docker token flow, wrong passwords, anonymous pulls allowed and denied, a token used outside
// its scope, an expired token, and a read-only deployment.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyPairSync, sign } from "node:crypto";
import { startWharf, startTlsFront, request, run, ACCEPT_ALL } from "./harness.mjs";
import { Layout } from "./layout.mjs";

const RULES = JSON.stringify([
  { repositories: "public/*", anonymous: ["pull"], users: { alice: ["push"] } },
  { repositories: "team/*", users: { alice: ["pull", "push", "delete"], bob: ["pull"] } },
]);
let wharf, front, shortLived, readOnly, external, layout;
const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const stranger = generateKeyPairSync("ec", { namedCurve: "P-256" });
const ISSUER = "https://auth.example";
const jwk = (pair, kid, alg) => ({ ...pair.publicKey.export({ format: "jwk" }), kid, alg, use: "sig" });

/** A JWT signed by the external issuer's key (or another). */
function externalToken(alg, pair, kid, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const input = `${b64({ alg, kid, typ: "JWT" })}.${b64(claims)}`;
  const signature = alg === "ES256"
    ? sign("sha256", Buffer.from(input), { key: pair.privateKey, dsaEncoding: "ieee-p1363" })
    : sign("sha256", Buffer.from(input), pair.privateKey);
  return `${input}.${signature.toString("base64url")}`;
}
const tmp = mkdtempSync(join(tmpdir(), "wharf-auth-"));

async function authVars(extra = {}) {
  const hash = async (pw, ...options) =>
    (await run("node", [join(import.meta.dirname, "..", "..", "scripts", "hash-password.mjs"), ...options, pw])).trim();
  return {
    WHARF_RULES: RULES,
    WHARF_USERS: JSON.stringify({
      alice: await hash("alice-pw"),
      bob: await hash("bob-pw"),
      // The former default count, and one above what workerd's WebCrypto derives.
      old: await hash("old-pw", "--iterations", "10000"),
      strong: await hash("strong-pw", "--iterations", "150000"),
    }),
    WHARF_TOKEN_SECRET: "an e2e token secret of forty characters!",
    ...extra,
  };
}

before(async () => {
  // skopeo talks HTTPS to the TLS front, so the challenge's realm must point there too: the
  // front listens first, and learns its target once wharf is up.
  front = await startTlsFront(() => wharf.host);
  wharf = await startWharf({ vars: await authVars({ WHARF_REALM: `https://${front.host}/token`, WHARF_DELETE_ENABLED: "true" }) });
  shortLived = await startWharf({ vars: await authVars({ WHARF_TOKEN_TTL_SECONDS: "1" }) });
  readOnly = await startWharf({ vars: await authVars({ WHARF_READ_ONLY: "true" }) });
  external = await startWharf({
    vars: await authVars({
      WHARF_TOKEN_ISSUER: ISSUER,
      WHARF_TOKEN_JWKS: JSON.stringify({ keys: [jwk(ec, "ec-1", "ES256"), jwk(rsa, "rsa-1", "RS256")] }),
    }),
  });
  layout = new Layout(join(tmp, "layout"));
  layout.tag("image", layout.image("amd64", [2048, 4096]));
});

after(() => {
  front?.stop();
  for (const w of [wharf, shortLived, readOnly, external]) w?.stop();
});

const skopeo = (...args) => run("skopeo", ["--insecure-policy", ...args]);
const push = (repo, ...creds) =>
  skopeo("copy", "--dest-tls-verify=false", ...creds, `oci:${layout.dir}:image`, `docker://${front.host}/${repo}:v1`);
const inspect = (repo, ...creds) => skopeo("inspect", "--tls-verify=false", "--raw", ...creds, `docker://${front.host}/${repo}:v1`);

test("passwords hashed with any iteration count verify, through WebCrypto or in wasm", async () => {
  const v2 = async (user, pw) =>
    (await request(shortLived.base, "GET", "/v2/", { headers: { Authorization: `Basic ${Buffer.from(`${user}:${pw}`).toString("base64")}` } })).status;
  for (const user of ["alice", "old", "strong"]) {
    assert.equal(await v2(user, `${user}-pw`), 200, user);
    assert.equal(await v2(user, `${user}-pw`), 200, `${user}, remembered`);
    assert.equal(await v2(user, "wrong"), 401, user);
  }
  assert.equal(await v2("nobody", "alice-pw"), 401);
});

test("skopeo pushes with --dest-creds and pulls with --creds through the token flow", async () => {
  await push("team/app", "--dest-creds", "alice:alice-pw");
  const raw = await inspect("team/app", "--creds", "bob:bob-pw");
  assert.equal(JSON.parse(raw).schemaVersion, 2);
  await assert.rejects(push("team/app", "--dest-creds", "bob:bob-pw"), /denied|unauthorized|403/i, "bob may only pull");
});

test("podman logs in, pushes and pulls, and is refused once logged out", async () => {
  const dir = join(tmpdir(), `wharf-podman-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const env = { ...process.env, REGISTRY_AUTH_FILE: join(dir, "auth.json") };
  const podman = (...args) =>
    run("podman", ["--root", join(dir, "root"), "--runroot", join(dir, "run"), "--storage-driver", "vfs", ...args], { env });
  try {
    await push("team/podman-source", "--dest-creds", "alice:alice-pw");
    await podman("login", "--tls-verify=false", "-u", "alice", "-p", "alice-pw", front.host);
    await podman("pull", "-q", "--tls-verify=false", `${front.host}/team/podman-source:v1`);
    await podman("push", "--tls-verify=false", `${front.host}/team/podman-source:v1`, `docker://${front.host}/team/podman:v1`);
    await podman("rmi", "-a", "-f");
    await podman("pull", "-q", "--tls-verify=false", `${front.host}/team/podman:v1`);
    assert.match(await podman("images", "--format", "{{.Repository}}:{{.Tag}}"), /team\/podman:v1/);
    await podman("logout", front.host);
    await assert.rejects(podman("pull", "--tls-verify=false", `${front.host}/team/podman:v1`), /unauthorized/i);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a wrong password is refused", async () => {
  await assert.rejects(push("team/wrong", "--dest-creds", "alice:not-it"), /unauthorized|401|invalid username or password/i);
  await assert.rejects(inspect("team/app", "--creds", "mallory:alice-pw"), /unauthorized|401|invalid username or password/i);
});

test("anonymous pulls are allowed where the rules say so and denied elsewhere", async () => {
  await push("public/tool", "--dest-creds", "alice:alice-pw");
  assert.equal(JSON.parse(await inspect("public/tool")).schemaVersion, 2);
  await assert.rejects(inspect("team/app"), /unauthorized|401|authentication required/i);
});

test("a token for one repository does not open another", async () => {
  const auth = "Basic " + Buffer.from("alice:alice-pw").toString("base64");
  const t = await request(wharf.base, "GET", "/token?service=wharf&scope=repository:team/app:pull", { headers: { Authorization: auth } });
  assert.equal(t.status, 200);
  const bearer = { Authorization: `Bearer ${t.json().token}`, Accept: ACCEPT_ALL };
  assert.equal((await request(wharf.base, "GET", "/v2/team/app/manifests/v1", { headers: bearer })).status, 200);
  const other = await request(wharf.base, "GET", "/v2/public/tool/manifests/v1", { headers: bearer });
  assert.deepEqual([other.status, other.code()], [401, "UNAUTHORIZED"]);
  assert.match(other.headers.get("www-authenticate"), /scope="repository:public\/tool:pull"/);
});

test("an expired token is refused", async () => {
  const auth = "Basic " + Buffer.from("alice:alice-pw").toString("base64");
  const t = await request(shortLived.base, "GET", "/token?service=wharf&scope=repository:team/x:pull", { headers: { Authorization: auth } });
  const bearer = { Authorization: `Bearer ${t.json().token}` };
  assert.equal((await request(shortLived.base, "GET", "/v2/", { headers: bearer })).status, 200);
  await new Promise((r) => setTimeout(r, 2100));
  const expired = await request(shortLived.base, "GET", "/v2/", { headers: bearer });
  assert.deepEqual([expired.status, expired.code()], [401, "UNAUTHORIZED"]);
});

test("a push to a read-only deployment is UNSUPPORTED, even for a user allowed to push", async () => {
  const auth = { Authorization: "Basic " + Buffer.from("alice:alice-pw").toString("base64") };
  const r = await request(readOnly.base, "POST", "/v2/team/app/blobs/uploads/", { headers: auth });
  assert.deepEqual([r.status, r.code()], [405, "UNSUPPORTED"]);
});

test("tokens of an external issuer (ES256 and RS256, checked with WebCrypto) are accepted; forged ones are not", async () => {
  const now = Math.floor(Date.now() / 1000);
  const claims = (extra = {}) => ({
    iss: ISSUER, sub: "ci", aud: "wharf", iat: now, nbf: now - 5, exp: now + 60,
    access: [{ type: "repository", name: "team/ext", actions: ["pull"] }], ...extra,
  });
  const as = async (token) =>
    (await request(external.base, "GET", "/v2/team/ext/tags/list", { headers: { Authorization: `Bearer ${token}` } })).status;
  // The repository does not exist: 404 NAME_UNKNOWN means the token was let through.
  assert.equal(await as(externalToken("ES256", ec, "ec-1", claims())), 404, "ES256");
  assert.equal(await as(externalToken("RS256", rsa, "rsa-1", claims())), 404, "RS256");
  assert.equal(await as(externalToken("ES256", stranger, "ec-1", claims())), 401, "signed by another key");
  assert.equal(await as(externalToken("ES256", ec, "ec-1", claims({ iss: "https://evil.example" }))), 401, "foreign issuer");
  assert.equal(await as(externalToken("ES256", ec, "ec-1", claims({ exp: now - 1 }))), 401, "expired");
  assert.equal(await as(externalToken("ES256", ec, "ec-1", claims({ aud: ["other", "wharf"] }))), 404, "audience list");
  assert.equal(await as(externalToken("RS256", rsa, "ec-1", claims())), 401, "key of the wrong type");
  const denied = externalToken("ES256", ec, "ec-1", claims({ access: [{ type: "repository", name: "team/other", actions: ["pull"] }] }));
  assert.equal(await as(denied), 401, "scope for another repository");
});
