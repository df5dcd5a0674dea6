"""Checks a built wheel before anyone installs it (`make wheel`).

auditwheel says whether the extension links only against what
manylinux_2_17 allows; this says whether the wheel is the package we mean
to ship: abi3 tags for CPython 3.10 and later on manylinux_2_17 (or
newer), the typing stubs and py.typed, and the browser client.

Usage: python scripts/check_wheel.py WHEEL [--version X.Y.Z]
Exits 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from email.parser import Parser
from pathlib import PurePosixPath

# What a user's `import wshub` needs besides the extension itself.
REQUIRED = [
    "wshub/__init__.py",
    "wshub/_native.pyi",
    "wshub/py.typed",
    "wshub/testing.py",
    "wshub/client/wshub.js",
    "wshub/client/wshub.d.ts",
    "wshub/client/package.json",
]
# Oldest glibc a manylinux tag may ask for: manylinux2014 is 2.17.
MAX_GLIBC_MINOR = 17


def problems(wheel: str, version: str | None, portable: bool = True) -> list[str]:
    found: list[str] = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next((n for n in names if n.endswith(".dist-info/WHEEL")), None)
        meta = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        if info is None or meta is None:
            return [f"{wheel}: no .dist-info/WHEEL or METADATA"]
        tags = Parser().parsestr(archive.read(info).decode()).get_all("Tag") or []
        metadata = Parser().parsestr(archive.read(meta).decode())
    for path in REQUIRED:
        if path not in names:
            found.append(f"missing {path}")
    if not any(re.fullmatch(r"wshub/_native\.abi3\.so", n) for n in names):
        found.append("missing the abi3 extension wshub/_native.abi3.so")
    if not tags:
        found.append("no Tag in WHEEL")
    for tag in tags:
        python, abi, platform = tag.split("-")
        if (python, abi) != ("cp310", "abi3"):
            found.append(f"tag {tag}: not cp310-abi3")
        glibc = re.fullmatch(r"manylinux_2_(\d+)_\w+", platform)
        legacy = platform.startswith("manylinux2014_")
        if portable and not legacy and (glibc is None or int(glibc.group(1)) > MAX_GLIBC_MINOR):
            found.append(f"tag {tag}: not manylinux_2_{MAX_GLIBC_MINOR} or older")
    if metadata["Name"] != "wshub":
        found.append(f"Name is {metadata['Name']!r}")
    if version is not None and metadata["Version"] != version:
        found.append(f"Version is {metadata['Version']!r}, expected {version!r}")
    classifiers = metadata.get_all("Classifier") or []
    for wanted in ["Typing :: Typed", "Programming Language :: Python :: 3.10",
                   "Programming Language :: Python :: 3.13"]:
        if wanted not in classifiers:
            found.append(f"classifier {wanted!r} missing")
    if metadata["Requires-Python"] != ">=3.10":
        found.append(f"Requires-Python is {metadata['Requires-Python']!r}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel")
    parser.add_argument("--version")
    # A wheel pip builds from the sdist on this machine is tagged for it
    # (linux_x86_64): its contents are checked, not its portability.
    parser.add_argument("--local-build", action="store_true")
    args = parser.parse_args()
    found = problems(args.wheel, args.version, portable=not args.local_build)
    for problem in found:
        print(f"{PurePosixPath(args.wheel).name}: {problem}", file=sys.stderr)
    if not found:
        print(f"{PurePosixPath(args.wheel).name}: tags, stubs, py.typed and client OK")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
