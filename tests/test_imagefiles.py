"""Bounded input: pixel and byte caps before decoding, archives read member by member, atomic cache
writes under concurrency, and bombs refused inside a memory-limited subprocess."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fpxint.data import DataError, load_data
from fpxint.zoo import get_spec

CIFAR = get_spec("resnet20")
ROOT = Path(__file__).resolve().parents[1]


def _png(path: Path, size=(32, 32), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def bomb_png(path: Path, side: int = 40_000) -> Path:
    """A valid 1-bit greyscale PNG of side x side pixels (~1.6 GB once decoded to 8 bits), a few hundred KB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_images_over_the_pixel_limit_are_skipped_before_decoding(tmp_path):
    for i in range(3):
        _png(tmp_path / f"small{i}.png", (32, 32), i)
    _png(tmp_path / "large.png", (64, 64))
    data = load_data(tmp_path, CIFAR, max_pixels=32 * 32)
    assert len(data) == 3
    assert data.skipped == ["large.png: 64x64 = 4,096 pixels, over the limit of 1,024"]


def test_a_40000_pixel_square_png_is_skipped_by_its_header(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 2_000_000
    _png(tmp_path / "ok.png")
    data = load_data(tmp_path, CIFAR)  # the default limit; a decode would take 1.6 GB
    assert len(data) == 1 and data.skipped[0].startswith("bomb.png: ")
    assert "pixels" in data.skipped[0] or "decompression bomb" in data.skipped[0]


def test_files_over_the_byte_cap_are_skipped(tmp_path):
    _png(tmp_path / "a.png", (32, 32), 1)
    big = _png(tmp_path / "b.png", (128, 128), 2)
    data = load_data(tmp_path, CIFAR, max_file_bytes=big.stat().st_size - 1)
    assert len(data) == 1 and data.skipped[0].startswith("b.png: ") and "per-image limit" in data.skipped[0]


def test_zip_member_that_inflates_past_the_cap_is_skipped(tmp_path):
    archive = tmp_path / "z.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(_png(tmp_path / "a.png"), "a.png")
        zf.writestr("zeros.png", b"\x00" * (4 << 20))  # 4 MB of zeros, ~4 KB compressed
    data = load_data(archive, CIFAR, max_file_bytes=1 << 20)
    assert len(data) == 1 and data.skipped[0].startswith("zeros.png: ") and "per-image limit" in data.skipped[0]


def test_zip_whose_header_lies_about_a_member_size_is_stopped_at_the_declared_size(tmp_path):
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(_png(tmp_path / "a.png"), "a.png")
        zf.writestr("zeros.png", b"\x00" * (2 << 20))
    raw = bytearray(archive.read_bytes())
    # shrink the declared size of zeros.png in its central directory entry (offset 24 of the entry)
    cd = raw.rfind(b"PK\x01\x02" + raw[raw.rfind(b"PK\x01\x02") + 4: raw.rfind(b"PK\x01\x02") + 6])
    struct.pack_into("<I", raw, cd + 24, 100)
    archive.write_bytes(bytes(raw))
    data = load_data(archive, CIFAR)
    assert len(data) == 1 and data.skipped and data.skipped[0].startswith("zeros.png: ")


def test_concurrent_cache_fills_never_collide(tmp_path):
    """Eight threads fill the same cache entry at once: each writes its own temporary file, then renames."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        _png(folder / f"{i}.png", seed=i)
    errors, results, barrier = [], [], threading.Barrier(8)

    def fill():
        try:
            barrier.wait()
            results.append(load_data(folder, CIFAR, cache_dir=tmp_path / "cache").images)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=fill) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert all(torch.equal(r, results[0]) for r in results)
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # no temporary file left behind
    assert load_data(folder, CIFAR, cache_dir=tmp_path / "cache").from_cache


BOMB_CHILD = r"""
import resource, sys
import PIL.Image, torchvision.io, torchvision.transforms.v2.functional  # mapped before the limit is set
from fpxint.data import DataError, load_data
from fpxint.zoo import get_spec
spec = get_spec("resnet20")
size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
limit = size + int(sys.argv[2])  # what is mapped now, plus the headroom the test allows
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    data = load_data(sys.argv[1], spec)
except DataError as e:
    print("REFUSED", str(e).splitlines()[0][:200])
else:
    print("LOADED", len(data), "|".join(data.skipped)[:200])
"""


@pytest.mark.parametrize("kind", ["png", "zip_png", "zip_bomb"])
def test_bombs_are_refused_under_a_memory_limit(kind, tmp_path):
    """The bomb is loaded by a subprocess whose address space is capped (RLIMIT_AS) far below what
    decoding or inflating it would take: the loader must refuse or skip it, not run out of memory."""
    _png(tmp_path / "ok.png")
    if kind == "png":
        target = tmp_path / "dir"
        target.mkdir()
        bomb_png(target / "bomb.png")
        _png(target / "ok.png")
    else:
        target = tmp_path / "bomb.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(tmp_path / "ok.png", "ok.png")
            if kind == "zip_png":
                zf.write(bomb_png(tmp_path / "bomb.png"), "bomb.png")
            else:  # 1 GiB of zeros in one member, about 1 MB compressed
                with zf.open("zeros.png", "w", force_zip64=True) as f:
                    block = b"\x00" * (1 << 20)
                    for _ in range(1024):
                        f.write(block)
    headroom = 1 << 30  # decoding the PNG bomb needs 1.6 GB, inflating the zip bomb 1 GiB (2 GiB if copied)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", BOMB_CHILD, str(target), str(headroom)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    verdict = out.stdout.strip().splitlines()[-1]
    assert verdict.startswith(("LOADED 1 ", "REFUSED")), verdict
    assert "bomb.png" in verdict or "zeros.png" in verdict


def test_the_decoded_image_cache_keeps_its_size_bound(tmp_path, monkeypatch):
    from fpxint import imagecache

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(40):
        _png(folder / f"{i}.png", seed=i)
    cache = tmp_path / "cache"
    load_data(folder, CIFAR, limit=10, cache_dir=cache)
    one = next((cache / "images").glob("*.pt")).stat().st_size
    monkeypatch.setattr(imagecache, "MAX_BYTES", int(2.5 * one))  # room for about two entries of this size
    for n in (11, 12, 13, 14, 15):  # every subset size is its own entry
        assert len(load_data(folder, CIFAR, limit=n, cache_dir=cache)) == n
    sizes = [p.stat().st_size for p in (cache / "images").glob("*.pt")]
    assert sum(sizes) <= int(2.5 * one) and len(sizes) < 6  # the oldest entries went
    assert load_data(folder, CIFAR, limit=15, cache_dir=cache).from_cache  # the newest one survived
