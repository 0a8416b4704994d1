"""The app's cached loaders (models, images, expanded models), the session's uploads, and what a visitor
may see of the server's paths.

`st.cache_resource` holds one copy per process, shared by every session (read only: never mutated), and
bounded (`max_entries`). Its keys are typed, frozen values: `ModelRef` for a model, `DataRef` for images,
`TextRef` for a language model's text (the `dref` of every cache key).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from .. import scratch
from ..config import ExpansionConfig
from ..data import ImageData, load_data, random_images
from ..model import expand
from ..zoo import cache_dir, find_shared, get_spec, load_model
from ..zoo.registry import WEIGHTS_DIR

# The folder holding the fpxint package: the checkout, or site-packages when installed. Only for redact():
# a message naming a file in there shows "<app>" instead of the server's path.
_INSTALL_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ModelRef:
    """Which model the sidebar chose: the cache key of the loaded model and of everything computed on it.

    Frozen (hashable, never changed once built); Streamlit's caches hash it field by field.
    """

    name: str                          # registry name (fpxint.zoo) or a language model's name
    weights: str | None = None         # an uploaded checkpoint's path (in the session's folder), or None
    device: str = "cpu"                # "cpu" | "cuda": where the model and every computation on it run
    allow_download: bool = False       # may fetch missing published checkpoints


@dataclass(frozen=True)
class DataRef:
    """Which images the sidebar chose: the cache key of the loaded images (with `ModelRef`, of every result)."""

    name: str     # registry name of the model: it fixes the input size and the class order
    source: str   # "random", a folder or file on the server (bundled data), or an upload's path
    limit: int    # at most this many images (a stratified subset)


@dataclass(frozen=True)
class TextRef:
    """Which text a language model is scored on (app/lm.py's `sidebar_text`): the data key of its results."""

    name: str         # the language model's name (its tokenizer tokenizes the text)
    count: int        # WikiText-2 windows (causal LM) or STS-B test pairs (encoder)
    seq_len: int = 0  # tokens per window; 0 for STS-B pairs


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def model_of(ref: ModelRef):
    """The loaded model (fpxint.zoo.LoadedModel) of a reference; shared, read only."""
    return load_model(ref.name, weights=ref.weights, shared_dir=find_shared(), device=ref.device,
                      allow_download=ref.allow_download)


def _random_cap(spec) -> int:
    return 16 if spec.input_size[1] * spec.input_size[2] > 64 * 64 else 512  # CPU-sized probes for ImageNet models


@st.cache_resource(max_entries=4, show_spinner="Loading images…")
def images_of(dref: DataRef) -> ImageData:
    """The images of a data description; shared, read only."""
    spec = get_spec(dref.name)
    if dref.source == "random":
        n = min(dref.limit, _random_cap(spec))
        images = random_images(n, spec.input_size)
        return ImageData(images, None, None, f"random probe inputs: {n} Gaussian images (seed 0), unlabeled", 0)
    upload = Path(dref.source).parent.name.startswith(scratch.PREFIX)  # its decoded copy dies with the session
    return load_data(dref.source, spec, limit=dref.limit, cache_dir=None if upload else cache_dir())


@st.cache_resource(max_entries=2, show_spinner="Expanding…")
def expanded_model(mref: ModelRef, cfg_json: str) -> torch.nn.Module:
    """The expanded model of a config (shared, read only: never call set_mode on it)."""
    return expand(model_of(mref).model, ExpansionConfig.from_json(cfg_json), device=mref.device)


@st.cache_resource
def _swept() -> list[str]:
    """Once per server: removes upload folders left by servers that died without cleaning up."""
    return scratch.sweep()


def _session_dir() -> Path:
    """This session's private upload folder (0700), removed when the session's state is dropped."""
    d = st.session_state.get("_scratch")
    if d is None or not d.alive or not d.path.is_dir():
        d = st.session_state["_scratch"] = scratch.ScratchDir()
    return d.path


def _save_upload(upload) -> Path:
    """Writes an upload into the session's folder, named by its sha256 (the loaders take paths; the
    name is part of the cache key). Written to a temporary name and renamed: never half a file."""
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = _session_dir()
    path = folder / f"{digest}{Path(upload.name).suffix.lower()[:12]}"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path


def _known_paths() -> list[tuple[str, str]]:
    """(server path, what a visitor sees instead), longest first."""
    pairs = [(str(find_shared() or ""), "<shared>"), (str(cache_dir()), "<cache>"), (str(WEIGHTS_DIR), "<bundled>"),
             (str(_INSTALL_ROOT), "<app>"), (tempfile.gettempdir(), "<tmp>"), (str(Path.home()), "~")]
    d = st.session_state.get("_scratch")
    if d is not None:
        pairs.append((str(d.path), "upload"))
    return sorted(((p, label) for p, label in pairs if len(p) > 1), key=lambda x: -len(x[0]))


def redact(text: str) -> str:
    """The text with the server's folders replaced by names: visitors never see server paths."""
    for path, label in _known_paths():
        text = text.replace(path, label)
    return text


def _first_line(e: BaseException) -> str:
    """An exception as the one line a visitor sees (redacted, at most 300 characters)."""
    if isinstance(e, MemoryError):
        return "out of memory: use fewer images, fewer terms or simulate mode"
    text = str(e).strip() or type(e).__name__
    return redact(text.splitlines()[0])[:300]
