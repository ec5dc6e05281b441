// Writes OCI image layouts offline, for skopeo to push from: real tar+gzip layers, a config
// whose diff_ids match, image manifests and an index of several platforms.

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { randomBytes, createHash } from "node:crypto";
import { OCI_MANIFEST, OCI_INDEX } from "./harness.mjs";

const hex = (b) => createHash("sha256").update(b).digest("hex");

/** A ustar archive holding one regular file. */
function tar(name, content) {
  const header = Buffer.alloc(512);
  const field = (off, len, value) => header.write(value, off, len, "ascii");
  field(0, 100, name);
  field(100, 8, "0000644\0");
  field(108, 8, "0000000\0");
  field(116, 8, "0000000\0");
  field(124, 12, content.length.toString(8).padStart(11, "0") + "\0");
  field(136, 12, "00000000000\0");
  field(156, 1, "0");
  field(257, 6, "ustar\0");
  field(263, 2, "00");
  header.fill(" ", 148, 156);
  let sum = 0;
  for (const b of header) sum += b;
  field(148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  const pad = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Buffer.concat([header, content, pad, Buffer.alloc(1024)]);
}

export class Layout {
  constructor(dir) {
    this.dir = dir;
    this.blobs = new Map(); // digest -> bytes
    this.refs = [];
    mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
    writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  }

  blob(bytes) {
    const h = hex(bytes);
    writeFileSync(join(this.dir, "blobs", "sha256", h), bytes);
    this.blobs.set(`sha256:${h}`, bytes);
    return { digest: `sha256:${h}`, size: bytes.length };
  }

  /** An image of `layerSizes.length` layers of random (incompressible) content. */
  image(arch, layerSizes) {
    const layers = [];
    const diffIds = [];
    layerSizes.forEach((size, i) => {
      const t = tar(`file-${arch}-${i}`, randomBytes(size));
      diffIds.push(`sha256:${hex(t)}`);
      layers.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...this.blob(gzipSync(t, { level: 1 })) });
    });
    const config = Buffer.from(JSON.stringify({
      architecture: arch, os: "linux", config: {}, rootfs: { type: "layers", diff_ids: diffIds },
    }));
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...this.blob(config) },
      layers,
    }));
    return { mediaType: OCI_MANIFEST, ...this.blob(manifest), platform: { architecture: arch, os: "linux" } };
  }

  index(children) {
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: children }));
    return { mediaType: OCI_INDEX, ...this.blob(body) };
  }

  /** Names a descriptor in index.json so that `oci:<dir>:<name>` finds it. */
  tag(name, descriptor) {
    const { platform, ...d } = descriptor;
    this.refs.push({ ...d, annotations: { "org.opencontainers.image.ref.name": name } });
    writeFileSync(join(this.dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: this.refs }));
  }
}
