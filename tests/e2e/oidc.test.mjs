// CI identity through OIDC on workerd: an issuer on loopback publishes its discovery document
// and keys; skopeo pushes with the workload's ID token as the password of any user name, as
// `docker login -u oidc --password-stdin` does in a GitHub Actions job. RS256 and ES256 tokens
// are checked by WebCrypto; forged, expired and wrong-audience tokens get 401.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyPairSync, sign } from "node:crypto";
import { startWharf, startTlsFront, request, run } from "./harness.mjs";
import { Layout } from "./layout.mjs";

const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
const forger = generateKeyPairSync("rsa", { modulusLength: 2048 });
let issuer, wharf, front, layout;
const asked = [];
const tmp = mkdtempSync(join(tmpdir(), "wharf-oidc-"));

/** The issuer: its discovery document and its keys (RSA and EC). */
async function startIssuer() {
  const server = createServer((req, res) => {
    asked.push(req.url);
    const base = `http://127.0.0.1:${server.address().port}`;
    const jwk = (pair, kid, alg) => ({ ...pair.publicKey.export({ format: "jwk" }), kid, alg, use: "sig" });
    const body = req.url === "/.well-known/openid-configuration"
      ? { issuer: base, jwks_uri: `${base}/keys` }
      : req.url === "/keys" ? { keys: [jwk(rsa, "rsa-1", "RS256"), jwk(ec, "ec-1", "ES256")] } : null;
    res.statusCode = body ? 200 : 404;
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify(body ?? {}));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, stop: () => server.close() };
}

/** An ID token as GitHub Actions issues them, for `repository`, signed with `pair`. */
function idToken({ alg = "RS256", pair = rsa, kid = "rsa-1", repository = "acme/app", aud = "wharf", exp = 600 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const claims = {
    iss: issuer.url, aud, sub: `repo:${repository}:ref:refs/heads/main`, repository,
    repository_owner: repository.split("/")[0], iat: now, nbf: now - 5, exp: now + exp,
  };
  const input = `${b64({ alg, kid, typ: "JWT" })}.${b64(claims)}`;
  const signature = alg === "ES256"
    ? sign("sha256", Buffer.from(input), { key: pair.privateKey, dsaEncoding: "ieee-p1363" })
    : sign("sha256", Buffer.from(input), pair.privateKey);
  return `${input}.${signature.toString("base64url")}`;
}

before(async () => {
  issuer = await startIssuer();
  // skopeo talks HTTPS to the TLS front, so the challenge's realm points there: the front
  // listens first, and learns its target once wharf is up.
  front = await startTlsFront(() => wharf.host);
  wharf = await startWharf({
    vars: {
      WHARF_RULES: JSON.stringify([{
        repositories: "gh/${repository}",
        oidc: { claims: { iss: issuer.url, repository_owner: "acme" }, actions: ["pull", "push"] },
      }]),
      WHARF_TOKEN_SECRET: "an e2e token secret of forty characters!",
      WHARF_OIDC_ISSUERS: JSON.stringify([{ issuer: issuer.url, audience: "wharf" }]),
      WHARF_REALM: `https://${front.host}/token`,
    },
  });
  layout = new Layout(join(tmp, "layout"));
  layout.tag("image", layout.image("amd64", [2048]));
});

after(() => {
  front?.stop();
  wharf?.stop();
  issuer?.stop();
});

const skopeo = (...args) => run("skopeo", ["--insecure-policy", ...args]);
const status = async (path, token) =>
  (await request(wharf.base, "GET", path, { headers: { Authorization: `Basic ${Buffer.from(`oidc:${token}`).toString("base64")}` } })).status;

test("skopeo pushes and pulls with the workload's token as its password", async () => {
  await skopeo("copy", "--dest-tls-verify=false", "--dest-creds", `oidc:${idToken()}`,
    `oci:${layout.dir}:image`, `docker://${front.host}/gh/acme/app:v1`);
  const raw = await skopeo("inspect", "--raw", "--tls-verify=false", "--creds", `ci:${idToken({ alg: "ES256", pair: ec, kid: "ec-1" })}`,
    `docker://${front.host}/gh/acme/app:v1`);
  assert.equal(JSON.parse(raw).schemaVersion, 2);
  // The keys came from the discovery document, once.
  assert.deepEqual(asked, ["/.well-known/openid-configuration", "/keys"]);
});

test("a token for another repository, forged, expired or for another audience is refused", async () => {
  assert.equal(await status("/v2/gh/acme/app/tags/list", idToken()), 200);
  assert.equal(await status("/v2/gh/acme/app/tags/list", idToken({ repository: "evil/app" })), 403);
  assert.equal(await status("/v2/gh/acme/app/tags/list", idToken({ pair: forger })), 401);
  assert.equal(await status("/v2/gh/acme/app/tags/list", idToken({ exp: -10 })), 401);
  assert.equal(await status("/v2/gh/acme/app/tags/list", idToken({ aud: "elsewhere" })), 401);
  await assert.rejects(
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", `oidc:${idToken({ pair: forger })}`,
      `oci:${layout.dir}:image`, `docker://${front.host}/gh/acme/app:v2`),
    /unauthorized|401|invalid/i,
  );
});
