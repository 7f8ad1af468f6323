"""Offline bundle for a GPU machine without network: slim a staged tree, pack it into parts, unpack it there.

Standard library only: the unpacking side runs on the GPU machine's plain ``python3`` before anything is installed,
and ``lzma`` is in every CPython's standard library whatever command-line tools the machine lacks.

Layout of a staged tree (made by ``tools/gpu_bundle.sh``): ``site/`` (the wheels installed with ``pip --target``),
``src/`` (the mmcv sdist, built on the GPU machine), ``data/`` (a few real images for the parity checks).

Packing: the tree is cut into *units* (tar archives compressed with xz, preset 9|extreme by default): ``boot``
(the mmcv sdist and setuptools, all the background build needs), then the small files of ``site/``, then every
large file on its own, then ``data/``. The units' bytes are laid end to end and cut into parts of at most
``--part-mib`` MiB, so a unit may span parts. ``manifest.json`` records each part's size and sha256, each unit's
span (offset, size) in that stream and its sha256, and the commands that carry the parts, in order.

Unpacking (one call per part, in any order): the part is checked against its sum and kept under ``ROOT/parts``;
every unit whose bytes have all arrived is checked and extracted into ``ROOT``; ``ROOT/state.json`` remembers what
is done. ``verify`` fails unless every part arrived intact and every unit was extracted.

    python3 tools/gpu_bundle.py pack --root .bundle/stage --out .bundle [--part-mib 60] [--jobs 2]
    python3 tools/gpu_bundle.py unpack --manifest .bundle/manifest.json --part .bundle/part01.bin --root /tmp/ocp_gpu
    python3 tools/gpu_bundle.py verify --manifest .bundle/manifest.json --root /tmp/ocp_gpu
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import sys
import tarfile
import time
from pathlib import Path

MIB = 1 << 20
PRESETS = {"9e": 9 | lzma.PRESET_EXTREME, "6": 6, "1": 1, "0": 0}
KEEP_ABI = "cpython-312"  # the GPU machine's Python; extension modules for other versions are dropped
_EXT_TAG = re.compile(r"\.cpython-3\d+t?-[^/]*\.so$")
_DROP_DIRS = {"tests", "test", "yapftests", "include", "__pycache__"}
_BOOT = ("src/", "site/setuptools/", "site/pkg_resources/", "site/_distutils_hack/", "site/distutils-precedence.pth",
         "site/setuptools-")


# -- slimming ----------------------------------------------------------------------------------------------------
def slim(site: Path) -> dict[str, int]:
    """Drop from ``site`` what the run never loads: extension modules of other Python versions, headers, test
    folders, console scripts, command-line tools inside packages, static libraries and bytecode caches.

    Returns:
        ``{"files": removed file count, "bytes": removed bytes}``.
    """
    removed = {"files": 0, "bytes": 0}

    def drop(p: Path) -> None:
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        removed["files"] += len(files)
        removed["bytes"] += sum(f.stat().st_size for f in files)
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    for d in sorted((p for p in site.rglob("*") if p.is_dir() and p.name in _DROP_DIRS), key=lambda p: -len(p.parts)):
        if d.exists():
            drop(d)
    for p in [site / "bin", *site.glob("nvidia/*/bin")]:
        if p.exists():
            drop(p)
    for f in [f for f in site.rglob("*") if f.is_file()]:
        if (_EXT_TAG.search(f.name) and KEEP_ABI not in f.name) or f.suffix in (".a", ".h", ".hpp", ".cuh"):
            drop(f)
    return removed


# -- packing -----------------------------------------------------------------------------------------------------
def plan_units(root: Path, big_bytes: int = 16 * MIB) -> list[dict]:
    """The units of a staged tree, in transfer order: ``boot``, ``site`` (small files), one per large file,
    ``data``. Each is ``{"name", "files": [paths relative to root]}``; empty units are left out."""
    files = sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file() or f.is_symlink())
    boot = [f for f in files if f.startswith(_BOOT)]
    data = [f for f in files if f.startswith("data/")]
    rest = [f for f in files if f not in set(boot) | set(data)]
    big = [f for f in rest if (root / f).stat().st_size >= big_bytes]
    small = [f for f in rest if f not in set(big)]
    units = [dict(name="boot", files=boot), dict(name="site", files=small)]
    units += [dict(name=f"big:{f}", files=[f]) for f in big]
    units.append(dict(name="data", files=data))
    return [u for u in units if u["files"]]


def compress_unit(root: str, files: list[str], preset: int, dest: str) -> str:
    """Write ``files`` (relative to ``root``) as one tar.xz at ``dest``; return its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in files:
            tar.add(os.path.join(root, f), arcname=f, recursive=False)
    packed = lzma.compress(buf.getvalue(), preset=preset)
    Path(dest).write_bytes(packed)
    return hashlib.sha256(packed).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 * MIB), b""):
            h.update(block)
    return h.hexdigest()


def _compress_all(root: Path, units: list[dict], work: Path, preset: int, jobs: int) -> None:
    """Compress every unit into ``work`` (largest first, ``jobs`` processes), filling in sizes and sums."""
    work.mkdir(parents=True, exist_ok=True)
    for i, u in enumerate(units):
        u["raw_size"] = sum((root / f).stat().st_size for f in u["files"])
        u["blob"] = str(work / f"unit{i:03d}.tar.xz")
    order = sorted(range(len(units)), key=lambda i: -units[i]["raw_size"])
    with cf.ProcessPoolExecutor(max(1, jobs)) as ex:
        futs = {i: ex.submit(compress_unit, str(root), units[i]["files"], preset, units[i]["blob"]) for i in order}
        for n, i in enumerate(order, 1):
            units[i]["sha256"] = futs[i].result()
            units[i]["size"] = Path(units[i]["blob"]).stat().st_size
            print(f"  [{n}/{len(units)}] {units[i]['name']}: {units[i]['raw_size'] / MIB:.1f} MiB -> "
                  f"{units[i]['size'] / MIB:.1f} MiB", flush=True)


def write_parts(units: list[dict], out: Path, part_bytes: int) -> list[dict]:
    """Lay the compressed units end to end and cut the stream into ``partNN.bin`` files of at most
    ``part_bytes``; set each unit's ``offset``. Returns the parts' ``{"name", "size", "sha256"}``."""
    offset = 0
    for u in units:
        u["offset"], offset = offset, offset + u["size"]
    total = offset
    count = max(1, -(-total // part_bytes))
    parts = []
    stream = _UnitStream(units)
    for k in range(count):
        name = f"part{k + 1:02d}.bin"
        data = stream.read(min(part_bytes, total - k * part_bytes))
        (out / name).write_bytes(data)
        parts.append(dict(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    return parts


class _UnitStream:
    """Sequential reads across the units' compressed files, as if they were one file."""

    def __init__(self, units: list[dict]):
        self.paths = [u["blob"] for u in units]
        self.fh = None

    def read(self, n: int) -> bytes:
        chunks = []
        while n > 0:
            if self.fh is None:
                if not self.paths:
                    break
                self.fh = open(self.paths.pop(0), "rb")
            b = self.fh.read(n)
            if not b:
                self.fh.close()
                self.fh = None
                continue
            chunks.append(b)
            n -= len(b)
        return b"".join(chunks)


def pack(root: Path, out: Path, part_mib: float = 60, preset: str = "9e", jobs: int = 2,
         big_mib: float = 16) -> dict:
    """Compress the staged tree ``root`` into parts under ``out`` and write ``out/manifest.json``.

    Returns:
        The manifest (also written): ``parts``, ``units`` (name, files, raw_size, size, sha256, offset),
        ``total_size``, ``part_bytes_max``, ``preset``, ``commands`` (one per part, in order).
    """
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part*.bin"):
        old.unlink()
    units = plan_units(root, int(big_mib * MIB))
    _compress_all(root, units, out / "units", PRESETS[preset], jobs)
    parts = write_parts(units, out, int(part_mib * MIB))
    shutil.rmtree(out / "units")
    for u in units:
        del u["blob"]
    manifest = dict(format=1, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), preset=preset,
                    part_bytes_max=int(part_mib * MIB), total_size=sum(p["size"] for p in parts),
                    raw_size=sum(u["raw_size"] for u in units), parts=parts, units=units,
                    commands=[f"bash tools/gpu_proof.sh {k + 1}" for k in range(len(parts))],
                    pack_seconds=round(time.time() - t0, 1))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# -- unpacking (on the GPU machine) ------------------------------------------------------------------------------
def _state(root: Path) -> dict:
    p = root / "state.json"
    return json.loads(p.read_text()) if p.exists() else dict(parts={}, units=[])


def _read_span(manifest: dict, root: Path, offset: int, size: int) -> bytes | None:
    """Bytes [offset, offset + size) of the stream from the parts under ``root/parts``, or None if one is missing."""
    out, pos = [], 0
    for p in manifest["parts"]:
        lo, hi = pos, pos + p["size"]
        pos = hi
        if hi <= offset or lo >= offset + size:
            continue
        path = root / "parts" / p["name"]
        if not path.exists():
            return None
        with open(path, "rb") as fh:
            fh.seek(max(offset, lo) - lo)
            out.append(fh.read(min(offset + size, hi) - max(offset, lo)))
    return b"".join(out)


def unpack(manifest_path: Path, part: Path, root: Path) -> list[str]:
    """Check ``part`` against the manifest, keep it under ``root/parts`` and extract every unit now complete.

    Returns:
        The names of the units extracted by this call.

    Raises:
        ValueError: the part is not in the manifest, or a part's or unit's sha256 differs.
    """
    manifest = json.loads(manifest_path.read_text())
    entry = next((p for p in manifest["parts"] if p["name"] == part.name), None)
    if entry is None:
        raise ValueError(f"{part.name} is not a part of {manifest_path}")
    got = _sha256(part)
    if got != entry["sha256"] or part.stat().st_size != entry["size"]:
        raise ValueError(f"{part.name}: sha256 {got} / {part.stat().st_size} bytes, manifest says "
                         f"{entry['sha256']} / {entry['size']} bytes")
    (root / "parts").mkdir(parents=True, exist_ok=True)
    if part.resolve() != (root / "parts" / part.name).resolve():
        shutil.copyfile(part, root / "parts" / part.name)
    state = _state(root)
    state["parts"][part.name] = got
    done = []
    for u in manifest["units"]:
        if u["name"] in state["units"]:
            continue
        blob = _read_span(manifest, root, u["offset"], u["size"])
        if blob is None:
            continue
        if hashlib.sha256(blob).hexdigest() != u["sha256"]:
            raise ValueError(f"unit {u['name']}: sha256 differs from the manifest")
        with tarfile.open(fileobj=io.BytesIO(lzma.decompress(blob)), mode="r") as tar:
            tar.extractall(root, filter="tar") if hasattr(tarfile, "tar_filter") else tar.extractall(root)
        state["units"].append(u["name"])
        done.append(u["name"])
    (root / "state.json").write_text(json.dumps(state))
    return done


def verify(manifest_path: Path, root: Path) -> list[str]:
    """What is missing or wrong under ``root`` after the last part (empty when the bundle is complete): every
    part kept with its sum, every unit extracted, every file of every unit present with its size."""
    manifest = json.loads(manifest_path.read_text())
    state = _state(root)
    problems = []
    for p in manifest["parts"]:
        path = root / "parts" / p["name"]
        if not path.exists():
            problems.append(f"part {p['name']} never arrived")
        elif state["parts"].get(p["name"]) != p["sha256"] or _sha256(path) != p["sha256"]:
            problems.append(f"part {p['name']}: sha256 differs from the manifest")
    for u in manifest["units"]:
        if u["name"] not in state["units"]:
            problems.append(f"unit {u['name']} not extracted")
        elif sum((root / f).lstat().st_size for f in u["files"] if (root / f).exists()) != u["raw_size"]:
            problems.append(f"unit {u['name']}: files missing or of another size")
    return problems


def summary(manifest: dict) -> str:
    """One line per part and the totals."""
    lines = [f"{p['name']}: {p['size'] / MIB:.2f} MiB  sha256 {p['sha256'][:16]}..." for p in manifest["parts"]]
    lines.append(f"{len(manifest['parts'])} parts, {manifest['total_size'] / MIB:.1f} MiB in all "
                 f"({manifest['raw_size'] / MIB:.1f} MiB unpacked, {len(manifest['units'])} units, "
                 f"each part <= {manifest['part_bytes_max'] / MIB:.0f} MiB)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("slim", help="drop what the run never loads from a pip --target tree")
    s.add_argument("site", type=Path)
    p = sub.add_parser("pack", help="compress a staged tree into parts and a manifest")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--part-mib", type=float, default=60)
    p.add_argument("--big-mib", type=float, default=16)
    p.add_argument("--preset", choices=sorted(PRESETS), default="9e")
    p.add_argument("--jobs", type=int, default=2)
    for name in ("unpack", "verify"):
        q = sub.add_parser(name)
        q.add_argument("--manifest", type=Path, required=True)
        q.add_argument("--root", type=Path, required=True)
        if name == "unpack":
            q.add_argument("--part", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "slim":
        r = slim(args.site)
        print(f"slim: removed {r['files']} files, {r['bytes'] / MIB:.1f} MiB")
    elif args.cmd == "pack":
        print(summary(pack(args.root, args.out, args.part_mib, args.preset, args.jobs, args.big_mib)))
    elif args.cmd == "unpack":
        t0 = time.time()
        done = unpack(args.manifest, args.part, args.root)
        print(f"unpack {args.part.name}: {len(done)} units extracted in {time.time() - t0:.1f} s: {done}")
    else:
        problems = verify(args.manifest, args.root)
        print("\n".join(problems) or "bundle complete: every part and unit checked")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
