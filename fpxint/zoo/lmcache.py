"""A private on-disk cache of GGUF language models converted to float (SmolLM2-135M).

transformers dequantizes a GGUF file (and rebuilds its tokenizer) at every load: seconds of work per
process, and most of a loaded machine's first minute. The float copy it produces is kept here as
safetensors (weights) and JSON (config, tokenizer), and later loads read that instead.

Layout: ``<cache root>/lm/<file stem>-<sha256 of the GGUF file, 16 hex>/`` holding what
`save_pretrained` writes plus ``fpxint_source.json`` (the file's full sha256 and size). The key is the
content of the GGUF file, so a changed file gets a new entry and is never served stale; the old one
is removed once the new one is written. ``lm/`` and its entries are private (mode 0700, owned by this
user, checked before use like the kernel cache: weights another user could plant would be served
as this user's). An entry is written in a temporary sibling folder, then renamed: a reader sees no
entry or a whole one. Weights load with safetensors only (no pickle). Any failure to read an entry
rebuilds it from the GGUF file; any failure to write one only costs the next load its time.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import warnings
from pathlib import Path

import torch

from .hf_files import pretrained
from .paths import UntrustedFolder, private_folder

__all__ = ["SUBDIR", "MANIFEST", "file_sha256", "entry_dir", "load_gguf"]

SUBDIR = "lm"
MANIFEST = "fpxint_source.json"
_SHA_MEMO: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256: hashed once per process and file


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (remembered per process while its size, mtime and inode are unchanged)."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        if len(_SHA_MEMO) > 64:  # a handful of files in practice; never grows without bound
            _SHA_MEMO.clear()
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def entry_dir(root: Path, gguf: Path, sha: str) -> Path:
    """The cache entry of a GGUF file with content hash `sha` under the cache root."""
    return Path(root) / SUBDIR / f"{gguf.stem}-{sha[:16]}"


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else -1


def _trusted_entry(entry: Path, sha: str, uid: int) -> bool:
    """A whole entry of this file, written by this user and private: a folder (not a link) of `uid`
    with no group / others access, and a manifest naming the same sha256."""
    try:
        st = os.lstat(entry)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        raise UntrustedFolder(f"{entry} is not a private folder of uid {uid} "
                              f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
    try:
        return json.loads((entry / MANIFEST).read_text()).get("sha256") == sha
    except (OSError, ValueError, AttributeError):
        return False


def _read(tf, entry: Path):
    model = pretrained(tf.AutoModelForCausalLM, entry, dtype=torch.float32, local_files_only=True)
    return model, pretrained(tf.AutoTokenizer, entry, False, local_files_only=True)


def _write(entry: Path, model, tok, sha: str, gguf: Path) -> None:
    """Writes the entry atomically (temporary sibling, then rename) and removes older entries of the file."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))  # mode 0700
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / MANIFEST).write_text(json.dumps({"sha256": sha, "size": gguf.stat().st_size, "file": gguf.name}))
        if entry.exists():  # an unreadable entry of the same file: replaced
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in entry.parent.glob(f"{gguf.stem}-*"):  # entries of earlier versions of this file
        if old != entry and old.is_dir() and not old.is_symlink() and len(old.name) == len(entry.name):
            shutil.rmtree(old, ignore_errors=True)


def load_gguf(tf, gguf: Path, root: Path | None) -> tuple[object, object, str, bool]:
    """A GGUF causal LM as (float32 transformers model, tokenizer, source text, served from the cache).

    Args:
        tf: the `transformers` module (imported by the caller, which owns the message when it is missing).
        gguf: the GGUF file.
        root: fpxint's cache folder (`fpxint.zoo.cache_dir()`), or None to convert without caching.

    Raises:
        ImportError: transformers cannot read GGUF files (no `gguf` package).
    """
    gguf = Path(gguf)
    entry = None
    if root is not None:
        try:
            sha = file_sha256(gguf)
            private_folder(Path(root) / SUBDIR, _uid())
            entry = entry_dir(root, gguf, sha)
            if _trusted_entry(entry, sha, _uid()):
                try:
                    model, tok = _read(tf, entry)
                    return model, tok, f"{gguf} (float copy in {entry.parent.name}/{entry.name}, sha256 {sha[:16]})", True
                except Exception:  # noqa: BLE001 - a truncated or edited entry is rebuilt below
                    pass
        except UntrustedFolder as e:  # not read, not written: the file is converted
            warnings.warn(f"fpxint: the language-model cache is not used: {e}", RuntimeWarning, stacklevel=3)
            entry = None
        except OSError:  # no cache folder (read-only home...): the file is converted
            entry = None
    model = pretrained(tf.AutoModelForCausalLM, gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = pretrained(tf.AutoTokenizer, gguf.parent, False, gguf_file=gguf.name)
    if entry is not None:
        try:
            _write(entry, model, tok, sha, gguf)
        except OSError:
            pass  # caching is an optimization; the model is loaded
    return model, tok, str(gguf), False
