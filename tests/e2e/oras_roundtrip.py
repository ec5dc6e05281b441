"""Chunked push and pull with oras-py (a real client that uploads in PATCH chunks).

Usage: oras_roundtrip.py HOST:PORT REPOSITORY
Pushes two files as an OCI artifact with do_chunked=True and 6 MiB chunks (deliberately not
a multiple of wharf's 5 MiB parts), pulls them back into a fresh directory and compares bytes.
Prints "oras roundtrip: ok" on success; exits non-zero otherwise.
"""

import hashlib
import os
import sys
import tempfile

import oras.provider


def main() -> int:
    host, repo = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="wharf-oras-")
    os.chdir(work)
    files = {"big.bin": os.urandom(23 * 1024 * 1024 + 17), "small.txt": b"hello from oras\n"}
    for name, data in files.items():
        with open(name, "wb") as f:
            f.write(data)

    registry = oras.provider.Registry(hostname=host, insecure=True)
    target = f"{host}/{repo}:v1"
    response = registry.push(target=target, files=list(files), do_chunked=True, chunk_size=6 * 1024 * 1024, quiet=True)
    if response.status_code != 201:
        print(f"manifest push answered {response.status_code}: {response.text}")
        return 1

    out = os.path.join(work, "pulled")
    pulled = registry.pull(target=target, outdir=out)
    got = {os.path.basename(p): open(p, "rb").read() for p in pulled}
    for name, data in files.items():
        if got.get(name) != data:
            print(f"{name}: pulled bytes differ (sha256 {hashlib.sha256(got.get(name, b'')).hexdigest()})")
            return 1
    print("oras roundtrip: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
