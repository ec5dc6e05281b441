// Content discovery and content management of the distribution-spec on workerd: tags/list,
// _catalog and referrers with pagination and filtering, sha512 content, multi-tag pushes, and
// deletes reflected in every listing. (Pull and push are covered by registry.test.mjs,
// uploads.test.mjs and the client round trips.)

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { startWharf, request, sha256, OCI_MANIFEST, OCI_INDEX } from "./harness.mjs";

let wharf;
before(async () => {
  wharf = await startWharf({ vars: { WHARF_DELETE_ENABLED: "true", WHARF_MAX_PAGE_SIZE: "3" } });
});
after(() => wharf?.stop());

const req = (method, path, opts) => request(wharf.base, method, path, opts);
const sha512 = (b) => "sha512:" + createHash("sha512").update(b).digest("hex");
const linkOf = (r) => {
  const l = r.headers.get("link");
  if (!l) return null;
  assert.match(l, /^<[^>]+>; rel="next"$/);
  return l.slice(1, l.indexOf(">"));
};

async function blob(repo, bytes, digest = sha256(bytes)) {
  const r = await req("POST", `/v2/${repo}/blobs/uploads/?digest=${digest}`, { body: bytes });
  assert.equal(r.status, 201, r.body.toString());
  return { digest, size: bytes.length };
}

async function manifest(repo, ref, extra = {}, query = "") {
  const config = await blob(repo, Buffer.from("{}"));
  const body = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config }, layers: [], ...extra,
  }));
  const reference = ref ?? sha256(body);
  const r = await req("PUT", `/v2/${repo}/manifests/${reference}${query}`, { headers: { "Content-Type": OCI_MANIFEST }, body });
  assert.equal(r.status, 201, r.body.toString());
  return { body, digest: sha256(body), response: r };
}

async function allPages(path, field) {
  const pages = [];
  for (let next = path; next; ) {
    const r = await req("GET", next);
    assert.equal(r.status, 200, `${next}: ${r.body}`);
    pages.push(r.json()[field].map((x) => (typeof x === "string" ? x : x.digest)));
    next = linkOf(r);
    assert.ok(pages.length < 20);
  }
  return pages;
}

test("tags/list: lexical order, n, last, Link, n=0, unknown repository", async () => {
  for (const tag of ["b", "a", "d", "c", "e"]) await manifest("e2e/disc/tags", tag, { annotations: { t: tag } });
  const all = await allPages("/v2/e2e/disc/tags/tags/list", "tags");
  assert.deepEqual(all, [["a", "b", "c"], ["d", "e"]], "pages of WHARF_MAX_PAGE_SIZE without n");
  const two = await req("GET", "/v2/e2e/disc/tags/tags/list?n=2&last=a");
  assert.deepEqual(two.json(), { name: "e2e/disc/tags", tags: ["b", "c"] });
  assert.ok(linkOf(two));
  const end = await req("GET", "/v2/e2e/disc/tags/tags/list?n=2&last=d");
  assert.deepEqual([end.json().tags, linkOf(end)], [["e"], null]);
  // A `last` that is no tag (too long for an R2 key, a NUL) is placed by its bytes.
  const long = await req("GET", `/v2/e2e/disc/tags/tags/list?n=3&last=a${"z".repeat(3000)}`);
  assert.deepEqual([long.status, long.json().tags], [200, ["b", "c", "d"]]);
  const nul = await req("GET", "/v2/e2e/disc/tags/tags/list?n=2&last=c%00");
  assert.deepEqual([nul.status, nul.json().tags], [200, ["d", "e"]]);
  const zero = await req("GET", "/v2/e2e/disc/tags/tags/list?n=0");
  assert.deepEqual([zero.json().tags, linkOf(zero)], [[], null]);
  const tooMany = await req("GET", "/v2/e2e/disc/tags/tags/list?n=4");
  assert.deepEqual([tooMany.status, tooMany.code()], [400, "PAGINATION_NUMBER_INVALID"]);
  const unknown = await req("GET", "/v2/e2e/disc/none/tags/list");
  assert.deepEqual([unknown.status, unknown.code()], [404, "NAME_UNKNOWN"]);
});

test("a push by digest with ?tag= tags each", async () => {
  const { digest } = await manifest("e2e/disc/multi", undefined, {}, "?tag=one&tag=two");
  const r = await req("GET", "/v2/e2e/disc/multi/tags/list");
  assert.deepEqual(r.json().tags, ["one", "two"]);
  for (const t of ["one", "two"]) {
    const h = await req("HEAD", `/v2/e2e/disc/multi/manifests/${t}`, { headers: { Accept: OCI_MANIFEST } });
    assert.equal(h.headers.get("docker-content-digest"), digest);
  }
});

test("sha512 blobs and manifests are accepted and served", async () => {
  const bytes = Buffer.from("sha512 content");
  const { digest } = await blob("e2e/disc/sha512", bytes, sha512(bytes));
  const got = await req("GET", `/v2/e2e/disc/sha512/blobs/${digest}`);
  assert.deepEqual([got.status, got.headers.get("docker-content-digest"), got.body.toString()], [200, digest, "sha512 content"]);
  // A session hashes sha256 on the way; a sha512 digest is checked by reading the blob back,
  // here in two pieces (8 MiB each), and a wrong one leaves nothing.
  const chunked = randomBytes(9 << 20);
  const wrong = await req("POST", "/v2/e2e/disc/sha512/blobs/uploads/");
  await req("PATCH", wrong.headers.get("location"), { body: chunked });
  const refused = await req("PUT", `${wrong.headers.get("location")}?digest=${sha512(Buffer.from("other"))}`);
  assert.deepEqual([refused.status, refused.code()], [400, "DIGEST_INVALID"]);
  const session = await req("POST", "/v2/e2e/disc/sha512/blobs/uploads/");
  await req("PATCH", session.headers.get("location"), { body: chunked });
  const done = await req("PUT", `${session.headers.get("location")}?digest=${sha512(chunked)}`);
  assert.equal(done.status, 201);
  const back = await req("GET", `/v2/e2e/disc/sha512/blobs/${sha512(chunked)}`);
  assert.ok(back.body.equals(chunked));
  const config = await blob("e2e/disc/sha512", Buffer.from("{}"));
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config }, layers: [] }));
  const put = await req("PUT", `/v2/e2e/disc/sha512/manifests/${sha512(body)}`, { headers: { "Content-Type": OCI_MANIFEST }, body });
  assert.deepEqual([put.status, put.headers.get("docker-content-digest")], [201, sha512(body)]);
  const m = await req("GET", `/v2/e2e/disc/sha512/manifests/${sha512(body)}`, { headers: { Accept: OCI_MANIFEST } });
  assert.ok(m.body.equals(body));
});

test("referrers: OCI-Subject on push, index with artifactType and annotations, filter, Link, unknown subject", async () => {
  const subject = await manifest("e2e/disc/ref", "v1");
  const refs = [];
  for (let i = 0; i < 4; i++) {
    const type = i % 2 ? "application/vnd.example.sig" : "application/vnd.example.sbom";
    const r = await manifest("e2e/disc/ref", undefined, {
      artifactType: type,
      subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.body.length },
      annotations: { n: String(i) },
    });
    assert.equal(r.response.headers.get("oci-subject"), subject.digest);
    refs.push({ digest: r.digest, type });
  }
  const first = await req("GET", `/v2/e2e/disc/ref/referrers/${subject.digest}`);
  assert.equal(first.headers.get("content-type"), OCI_INDEX);
  assert.equal(first.json().mediaType, OCI_INDEX);
  const pages = await allPages(`/v2/e2e/disc/ref/referrers/${subject.digest}`, "manifests");
  assert.deepEqual(pages.flat().sort(), refs.map((r) => r.digest).sort());
  assert.ok(pages.length > 1, "more referrers than a page: Link followed");
  const one = first.json().manifests[0];
  const expected = refs.find((r) => r.digest === one.digest);
  assert.equal(one.artifactType, expected.type);
  assert.ok(one.annotations.n !== undefined);

  const filtered = await req("GET", `/v2/e2e/disc/ref/referrers/${subject.digest}?artifactType=application/vnd.example.sig`);
  assert.equal(filtered.headers.get("oci-filters-applied"), "artifactType");
  assert.ok(filtered.json().manifests.every((m) => m.artifactType === "application/vnd.example.sig"));

  const unknown = await req("GET", `/v2/e2e/disc/ref/referrers/${sha256(Buffer.from("none"))}`);
  assert.deepEqual([unknown.status, unknown.json().manifests], [200, []]);
  const bad = await req("GET", "/v2/e2e/disc/ref/referrers/sha256:nope");
  assert.deepEqual([bad.status, bad.code()], [400, "DIGEST_INVALID"]);

  // Content management: a deleted referrer leaves the list.
  assert.equal((await req("DELETE", `/v2/e2e/disc/ref/manifests/${refs[0].digest}`)).status, 202);
  const after = (await allPages(`/v2/e2e/disc/ref/referrers/${subject.digest}`, "manifests")).flat();
  assert.ok(!after.includes(refs[0].digest));
  assert.equal(after.length, 3);
});

test("referrers with 5 KiB and 12 KiB of annotations are accepted and listed with them", async () => {
  const subject = await manifest("e2e/disc/big", "v1");
  const five = Object.fromEntries([1, 2, 3, 4, 5].map((i) => [`k${i}`, "v".repeat(1000)]));
  const twelve = { note: "w".repeat(12 * 1024) };
  const pushed = [];
  for (const annotations of [five, twelve]) {
    const subjectRef = { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.body.length };
    const r = await manifest("e2e/disc/big", undefined, { artifactType: "application/x.big", subject: subjectRef, annotations });
    pushed.push({ digest: r.digest, annotations });
  }
  const listed = (await req("GET", `/v2/e2e/disc/big/referrers/${subject.digest}`)).json().manifests;
  for (const { digest, annotations } of pushed) {
    assert.deepEqual(listed.find((m) => m.digest === digest)?.annotations, annotations);
  }
});

test("_catalog lists repositories with content, paginates, and forgets a repository whose last manifest is deleted", async () => {
  const { digest } = await manifest("e2e/disc/zz-gone", "v1");
  const names = (await allPages("/v2/_catalog", "repositories")).flat();
  assert.deepEqual(names, [...names].sort());
  assert.ok(names.includes("e2e/disc/tags") && names.includes("e2e/disc/zz-gone"));
  const page = await req("GET", "/v2/_catalog?n=1&last=e2e/disc/tags");
  assert.equal(page.json().repositories.length, 1);
  assert.ok(page.json().repositories[0] > "e2e/disc/tags");

  assert.equal((await req("DELETE", `/v2/e2e/disc/zz-gone/manifests/${digest}`)).status, 202);
  const later = (await allPages("/v2/_catalog", "repositories")).flat();
  assert.ok(!later.includes("e2e/disc/zz-gone"));
  const tags = await req("GET", "/v2/e2e/disc/zz-gone/tags/list");
  assert.equal(tags.status, 404);
});

test("content management: tag delete, manifest delete, blob delete", async () => {
  const { digest } = await manifest("e2e/disc/mgmt", "keep");
  await req("PUT", "/v2/e2e/disc/mgmt/manifests/drop", {
    headers: { "Content-Type": OCI_MANIFEST },
    body: (await req("GET", `/v2/e2e/disc/mgmt/manifests/${digest}`, { headers: { Accept: OCI_MANIFEST } })).body,
  });
  assert.equal((await req("DELETE", "/v2/e2e/disc/mgmt/manifests/drop")).status, 202);
  assert.deepEqual((await req("GET", "/v2/e2e/disc/mgmt/tags/list")).json().tags, ["keep"]);
  const b = await blob("e2e/disc/mgmt", Buffer.from("a blob to delete"));
  assert.equal((await req("DELETE", `/v2/e2e/disc/mgmt/blobs/${b.digest}`)).status, 202);
  const gone = await req("GET", `/v2/e2e/disc/mgmt/blobs/${b.digest}`);
  assert.deepEqual([gone.status, gone.code()], [404, "BLOB_UNKNOWN"]);
  assert.equal((await req("DELETE", `/v2/e2e/disc/mgmt/manifests/${digest}`)).status, 202);
  assert.equal((await req("GET", "/v2/e2e/disc/mgmt/manifests/keep", { headers: { Accept: OCI_MANIFEST } })).status, 404);
});
