"""Reading image files safely: bounded reads, header checks before decoding, batched decoding.

Every image is checked before a decoder allocates it: files (or archive members, as inflated) over a
byte cap and images over a pixel cap are skipped with a reason, never decoded (decompression bombs);
archives are read one member at a time into one buffer each, never extracted and never copied twice.
`fpxint.data` turns what this module reads into `ImageData`.
"""
from __future__ import annotations

import itertools
import os
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
MAX_PIXELS = 1 << 25  # 33.5 M pixels (e.g. 8000 x 4000; 100 MB decoded as RGB): larger images are skipped
MAX_FILE_BYTES = 32 << 20  # per image file, as stored or inflated from an archive: larger ones are skipped
_MAX_MEMBERS = 200_000  # zip entries listed at most (each costs a ZipInfo object)
_CHUNK = 256  # images read and decoded together (batched JPEG decode), then their bytes dropped


class DataError(ValueError):
    """The data could not be loaded; the message is one line saying what and where."""


def _pixels_ok(data: bytearray, max_pixels: int) -> None:
    """Reads only the header and refuses images over `max_pixels` before any decoder allocates them.

    torchvision's decoders have no size guard at all and PIL's own (Image.MAX_IMAGE_PIXELS) is a
    process-wide setting: the limit here is explicit and per call.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Image.DecompressionBombError:  # PIL's own guard fired first (over twice its limit)
        raise ValueError(f"decompression bomb: over {max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise ValueError("not an image format this reader knows") from None
    if width * height > max_pixels:
        raise ValueError(f"{width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}")


def decode_all(blobs: list[tuple[str, bytearray]], channels: int, prepare,
                max_pixels: int = MAX_PIXELS) -> tuple[list, list[str]]:
    """Decodes (name, bytes) pairs; JPEGs go through torchvision's batched decoder (fastest).

    Images over `max_pixels` (read from the header, before decoding) and unreadable ones are
    skipped with a reason; the bytes are wrapped, not copied (`torch.frombuffer` on the bytearray).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    out: list[torch.Tensor | None] = [None] * len(blobs)
    skipped: list[str] = []
    tensors: list[torch.Tensor | None] = []
    for name, data in blobs:
        try:
            if not data:
                raise ValueError("empty file")
            _pixels_ok(data, max_pixels)
            tensors.append(torch.frombuffer(data, dtype=torch.uint8))
        except Exception as exc:
            skipped.append(f"{name}: {_reason(exc)}")
            tensors.append(None)
    bad = {i for i, t in enumerate(tensors) if t is None}
    jpegs = [i for i, t in enumerate(tensors) if t is not None and len(t) > 3 and t[0] == 0xFF and t[1] == 0xD8]
    for start in range(0, len(jpegs), 512):
        chunk = jpegs[start : start + 512]
        try:
            for i, img in zip(chunk, decode_jpeg([tensors[i] for i in chunk], mode=mode)):
                out[i] = img
        except RuntimeError:
            pass  # a corrupt JPEG fails the whole chunk; its images are retried one by one below
    for i, (name, data) in enumerate(blobs):
        if i in bad:
            continue
        try:
            img = out[i] if out[i] is not None else _decode_one(tensors[i], data, mode, channels)
        except Exception as exc:
            skipped.append(f"{name}: {_reason(exc)}")
            continue
        out[i] = prepare(img[0] if img.ndim == 4 else img)  # animated GIF: first frame
    return out, skipped


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__


def _decode_one(tensor: torch.Tensor | None, data: bytes, mode, channels: int) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import Image
    from torchvision.io import decode_image

    if not data:
        raise ValueError("empty file")
    try:
        return decode_image(tensor, mode=mode)
    except RuntimeError:  # torchvision cannot read BMP, TIFF, PPM; PIL can
        with Image.open(io.BytesIO(data)) as im:
            arr = np.array(im.convert("L" if channels == 1 else "RGB"))
        img = torch.from_numpy(arr)
        return img.unsqueeze(0) if channels == 1 else img.permute(2, 0, 1).contiguous()


def is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return name.lower().endswith(IMAGE_EXTENSIONS) and not base.startswith(".") and "__MACOSX" not in name


def _scan_dir(root: Path) -> tuple[list[str], int]:
    """Lists files under ``root`` (relative POSIX paths, hidden ones skipped) and the newest mtime."""
    names, newest, stack = [], 0, [("", root)]
    while stack:  # os.scandir reuses the directory's stat data: 3x faster than Path.rglob here
        prefix, folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append((f"{prefix}{entry.name}/", entry.path))
                elif entry.is_file():
                    names.append(prefix + entry.name)
                    newest = max(newest, entry.stat().st_mtime_ns)
    return names, newest


class _TooBig(ValueError):
    pass


def _read_capped(f, declared: int, cap: int) -> bytearray:
    """Reads one file or archive member into one buffer, never past `cap` bytes (a header may lie)."""
    if declared > cap:
        raise _TooBig(f"{declared:,} bytes, over the per-image limit of {cap:,}")
    buf = bytearray(declared + 1)  # one spare byte: a member that inflates past its header shows itself
    view, n = memoryview(buf), 0
    while n < len(buf):
        got = f.readinto(view[n:])
        if not got:
            break
        n += got
    if n > declared:
        raise _TooBig(f"inflates past its declared {declared:,} bytes")
    del view
    del buf[n:]
    return buf


def open_source(path: Path, cap: int) -> tuple[list[str], dict[str, int], list[int], Callable[[str], bytearray],
                                                Callable[[], None]]:
    """Lists a folder or zip: relative names, their sizes, a change stamp for the cache key, a reader, a closer.

    Nothing is extracted: the reader inflates one member at a time into one buffer of at most `cap`
    bytes, so an archive never costs more than (images asked) x `cap`, and never two copies.
    """
    if path.suffix.lower() == ".zip" and path.is_file():
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise DataError(f"not a readable zip archive: {path} ({_reason(exc)})") from None
        infos = {i.filename: i for i in itertools.islice((i for i in archive.infolist() if not i.is_dir()),
                                                           _MAX_MEMBERS + 1)}
        if len(infos) > _MAX_MEMBERS:
            archive.close()
            raise DataError(f"zip archive {path} has more than {_MAX_MEMBERS:,} entries; refusing")

        def read_member(name: str) -> bytearray:
            info = infos[name]
            with archive.open(info) as f:
                return _read_capped(f, info.file_size, cap)

        stat = path.stat()
        sizes = {n: i.file_size for n, i in infos.items()}
        return list(infos), sizes, [stat.st_size, stat.st_mtime_ns], read_member, archive.close
    if not path.is_dir():
        raise DataError(f"no such file or folder: {path}")
    names, newest = _scan_dir(path)

    def read_file(name: str) -> bytearray:
        with open(path / name, "rb") as f:
            return _read_capped(f, os.fstat(f.fileno()).st_size, cap)

    return names, {}, [newest, path.stat().st_mtime_ns], read_file, lambda: None


def read_decode(files: list[str], wanted: list[int], read, channels: int, prepare, max_pixels: int,
                 budget: int) -> tuple[list[int], list[torch.Tensor], list[str]]:
    """Reads and decodes the wanted files chunk by chunk (each chunk's bytes dropped once decoded),
    stopping with DataError when the bytes read would pass `budget`."""
    ok, images, skipped, spent = [], [], [], 0
    for start in range(0, len(wanted), _CHUNK):
        chunk, blobs = [], []
        for i in wanted[start : start + _CHUNK]:
            try:
                data = read(files[i])
            except _TooBig as exc:
                skipped.append(f"{files[i]}: {exc}")
                continue
            except (OSError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
                skipped.append(f"{files[i]}: {_reason(exc)}")
                continue
            spent += len(data)
            if spent > budget:
                raise DataError(f"the images read pass the budget of {budget:,} bytes for this request; "
                                "ask for fewer images or use smaller files")
            chunk.append(i)
            blobs.append((files[i], data))
        decoded, bad = decode_all(blobs, channels, prepare, max_pixels)
        skipped += bad
        for i, img in zip(chunk, decoded):
            if img is not None:
                ok.append(i)
                images.append(img)
        del blobs, decoded
    return ok, images, skipped
