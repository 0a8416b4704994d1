"""The app's Streamlit layer (with its modules `admit`, `results`, `slides`, `lm`, the only part of
fpxint that imports Streamlit).

- `sidebar()`: the shared sidebar (model, data, every field of the expansion) rendered once per
  run by app.py; it builds ONE `ExpansionConfig` and keeps it in the URL (`st.query_params`).
- cached loaders (`st.cache_resource`, bounded) for models, images and expanded models;
  cached computations (`st.cache_data`) keyed by model + `cfg.to_json()` + data description.
- `run_block()`: Run / Stop buttons, progress, results kept in the session so a failed, invalid
  or stopped run never wipes what is on screen; every run is estimated and checked against the
  server's limits before it starts, then waits its turn in the server-wide queue (`_gate()`).
- uploads go to a private folder per session (`fpxint.scratch`), removed when the session ends;
  every message a visitor sees has the server's paths replaced by names (`redact`).
- small render helpers (`header`, `chart`, `metrics_table`) that keep the pages thin.

Progress bars live inside the cached functions on purpose: Streamlit replays elements created
inside a cached function on a cache hit, while an element created outside it would break replay.
"""
from __future__ import annotations

import hashlib
import os
import runpy
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import streamlit as st
import torch

from .. import admission, config as C, scratch, views
from . import lm as ui_lm
from ..config import ExpansionConfig
from ..data import DataError, ImageData, load_data, random_images
from ..model import device_name, expand, expandable_layers, resolve_device
from ..zoo import DEFAULT_MODEL, cache_dir, find_shared, get_spec, load_model, model_family, model_names
from ..zoo.registry import WEIGHTS_DIR
from ..zoo.paths import shared_dataset

DEVICES = ("auto", "cpu", "cuda")
DATA_SOURCES = ("bundled", "random", "upload")
CFG_KEYS = ("w_bits", "w_terms", "a_bits", "a_terms", "level", "w_granularity", "a_granularity", "scale_rule",
            "w_grid", "a_grid", "truncation", "first_last", "mode")
_BASE = ExpansionConfig()
DEFAULTS: dict[str, Any] = {"model": DEFAULT_MODEL, "data": "bundled", "n_images": 500, "device": "auto",
                            **{k: getattr(_BASE, k) for k in CFG_KEYS}}
INT_RANGES = {"w_bits": (1, C.MAX_BITS), "a_bits": (1, C.MAX_BITS), "w_terms": (1, C.MAX_TERMS),
              "a_terms": (1, C.MAX_TERMS), "n_images": (1, 50_000)}
CHOICES = {"level": C.LEVELS, "w_granularity": C.W_GRANULARITIES, "a_granularity": C.A_GRANULARITIES,
           "scale_rule": C.SCALE_RULES, "w_grid": C.GRIDS, "a_grid": C.GRIDS, "truncation": C.TRUNCATIONS,
           "first_last": C.FIRST_LAST, "mode": C.MODES, "device": DEVICES, "data": DATA_SOURCES}
FAMILY = {"builtin": "built-in, digits", "cifar10": "CIFAR-10", "torchvision": "ImageNet, torchvision", "user": "user",
          "language": "language model"}
MAX_PARAM_CHARS = 64  # URL parameters longer than this are ignored (no value here is longer than ~20)
APP = Path(__file__).resolve().parents[2] / "app.py"


# ----- the context every page reads ------------------------------------------------------------
@dataclass
class Context:
    """What the sidebar resolved this run: the model, the images, the one config, the device."""

    model_name: str
    mref: tuple | None = None          # (name, uploaded weights path or None, device, allow_download): model cache key
    loaded: Any = None                 # fpxint.zoo.LoadedModel
    dref: tuple | None = None          # (name, source, limit): the data description, part of every cache key
    data: ImageData | None = None
    cfg: ExpansionConfig | None = None
    device: str | None = None
    device_label: str = ""
    errors: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.loaded is not None and self.data is not None and self.cfg is not None and self.device is not None

    @property
    def trained(self) -> bool:
        return bool(self.loaded is not None and self.loaded.trained)

    @property
    def labeled(self) -> bool:
        return self.data is not None and self.data.labels is not None

    @property
    def cheap(self) -> bool:
        """The built-in model is tiny: its default views may compute on page load."""
        return self.loaded is not None and self.loaded.spec.family == "builtin"

    @property
    def cfg_json(self) -> str | None:
        return self.cfg.to_json() if self.cfg is not None else None

    @property
    def accuracy_off(self) -> str | None:
        """Why accuracy features are off (None when they are on)."""
        if self.loaded is not None and not self.loaded.trained:
            return (f"{self.model_name} is untrained (random weights: {redact(self.loaded.note) or 'no checkpoint'}); "
                    "accuracy means nothing here. Error and convergence analysis still work on random probe inputs.")
        return None

    def describe(self) -> str:
        parts = [self.model_name + ("" if self.loaded is None else
                                    f" ({FAMILY.get(self.loaded.spec.family, '')}{'' if self.trained else ', UNTRAINED'})")]
        if self.data is not None:
            parts.append(redact(self.data.source))
        if self.cfg is not None:
            parts.append(f"{self.cfg.label()}, {self.cfg.mode}")
        if self.device_label:
            parts.append(self.device_label)
        return " · ".join(parts)


def context() -> Context:
    """The context the sidebar built in this run (app.py renders the sidebar before the page)."""
    return st.session_state.get("_ctx") or Context(DEFAULT_MODEL, errors=("the sidebar has not run yet",))


# ----- cached loaders --------------------------------------------------------------------------
@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def _load_model(name: str, weights: str | None, device: str, allow_download: bool = False):
    return load_model(name, weights=weights, shared_dir=find_shared(), device=device, allow_download=allow_download)


def _random_cap(spec) -> int:
    return 16 if spec.input_size[1] * spec.input_size[2] > 64 * 64 else 512  # CPU-sized probes for ImageNet models


@st.cache_resource(max_entries=4, show_spinner="Loading images…")
def _load_images(name: str, source: str, limit: int) -> ImageData:
    spec = get_spec(name)
    if source == "random":
        n = min(limit, _random_cap(spec))
        images = random_images(n, spec.input_size)
        return ImageData(images, None, None, f"random probe inputs: {n} Gaussian images (seed 0), unlabeled", 0)
    upload = Path(source).parent.name.startswith(scratch.PREFIX)  # its decoded copy dies with the session
    return load_data(source, spec, limit=limit, cache_dir=None if upload else cache_dir())


def model_of(mref: tuple):
    return _load_model(*mref)


def images_of(dref: tuple) -> ImageData:
    return _load_images(*dref)


@st.cache_resource(max_entries=2, show_spinner="Expanding…")
def expanded_model(mref: tuple, cfg_json: str) -> torch.nn.Module:
    """The expanded model of a config (shared, read only: never call set_mode on it)."""
    return expand(model_of(mref).model, ExpansionConfig.from_json(cfg_json), device=mref[2])


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
             (str(APP.parent), "<app>"), (tempfile.gettempdir(), "<tmp>"), (str(Path.home()), "~")]
    d = st.session_state.get("_scratch")
    if d is not None:
        pairs.append((str(d.path), "upload"))
    return sorted(((p, label) for p, label in pairs if len(p) > 1), key=lambda x: -len(x[0]))


def redact(text: str) -> str:
    """The text with the server's folders replaced by names: visitors never see server paths."""
    for path, label in _known_paths():
        text = text.replace(path, label)
    return text


# ----- the sidebar -----------------------------------------------------------------------------
def _read_query_params(names: list[str]) -> list[str]:
    """Copies valid URL parameters into the widgets' state; returns one line per rejected one."""
    bad = []
    choices = {**CHOICES, "model": tuple(names)}
    for key in DEFAULTS:
        if key not in st.query_params:
            continue
        raw = str(st.query_params[key])
        shown = repr(raw if len(raw) <= 24 else raw[:20] + "…")
        if len(raw) > MAX_PARAM_CHARS:
            bad.append(f"{key}={shown} (too long)")
        elif key in INT_RANGES:
            lo, hi = INT_RANGES[key]
            # ASCII digits only: str.isdigit() also accepts '²' and other digits int() rejects
            if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not lo <= int(raw) <= hi:
                bad.append(f"{key}={shown} (an integer {lo}..{hi})")
                continue
            st.session_state[key] = int(raw)
        elif raw in choices[key]:
            st.session_state[key] = raw
        else:
            bad.append(f"{key}={shown} (one of {', '.join(choices[key])})")
    return bad


def _write_query_params() -> None:
    """The URL holds every setting that differs from the default, so a link reproduces the view."""
    want = {k: str(st.session_state[k]) for k in DEFAULTS if st.session_state.get(k) != DEFAULTS[k]}
    want.update({k: st.query_params[k] for k in PAGE_PARAMS if k in st.query_params})  # a page's own, kept
    if want != {k: st.query_params[k] for k in st.query_params}:
        st.query_params.from_dict(want)


def _default_source(name: str) -> str:
    return "random" if model_family(name) == "torchvision" else "bundled"  # torchvision's are untrained offline


def default_refs() -> tuple[tuple, str, tuple]:
    """(mref, cfg_json, dref) that `sidebar()` builds from DEFAULTS for a visitor with a plain URL."""
    name = DEFAULTS["model"]
    where, why = _bundled_source(get_spec(name))
    if where is None:
        raise DataError(why)
    cfg = ExpansionConfig(**{k: DEFAULTS[k] for k in CFG_KEYS})
    return (name, None, resolve_device(DEFAULTS["device"]).type, False), cfg.to_json(), (name, where, int(DEFAULTS["n_images"]))


def prewarm() -> float:
    """Compute the default view into the app's caches at server start (app.py's st.App lifespan), so the
    first visitor finds the built-in model, its images and the Expand page's metrics ready. Returns seconds."""
    t0 = time.perf_counter()
    expansion_metrics(*default_refs())
    return time.perf_counter() - t0


def _on_model_change() -> None:
    if ui_lm.is_language_model(st.session_state["model"]):
        st.session_state["a_granularity"] = "per_token"  # one scale per token: what LLM quantization uses
        return
    st.session_state["data"] = _default_source(st.session_state["model"])


def _bundled_source(spec) -> tuple[str | None, str]:
    """(source for load_data or None, why not) of a model's bundled dataset."""
    if spec.dataset == "digits":
        return "digits", ""
    if spec.dataset == "cifar10":
        shared = find_shared()
        folder = shared / "data" / "cifar10-test" if shared else None
        if folder is None or not folder.is_dir():
            return None, ("CIFAR-10 test images not found: set FPXINT_SHARED to the shared folder (it holds "
                          "data/cifar10-test), or choose 'random probe inputs' or upload a zip of images")
        return str(folder), ""
    if spec.dataset == "imagenet" and spec.family != "torchvision":
        folder = shared_dataset("imagenet", find_shared())
        if folder is None:
            return None, ("ImageNet validation images not found: set FPXINT_SHARED to the shared folder (it holds "
                          "data/imagenet-val-1300), or choose 'random probe inputs' or upload a zip of images")
        return str(folder), ""
    return None, (f"no {spec.dataset or 'matching'} images are bundled: upload a zip of class folders "
                  "(or of unlabeled images), or choose 'random probe inputs'")


def _source_label(spec, source: str) -> str:
    if source == "bundled":
        return {"digits": "digits test split (bundled)", "cifar10": "CIFAR-10 test images (shared)",
                "imagenet": "ImageNet validation images (shared, 1,300)"}.get(
            spec.dataset, f"{spec.dataset} images (none bundled)")
    return {"random": "random probe inputs (unlabeled)", "upload": "upload a zip of images"}[source]


def sidebar() -> Context:
    """Renders the shared sidebar and builds the one ExpansionConfig every page uses."""
    names = model_names() + ui_lm.lm_names()  # no spec is built for the menu: torchvision's import costs seconds
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    _swept()
    if not st.session_state.get("_qp_read"):  # first load: the URL wins over the defaults
        st.session_state["_qp_read"] = True
        try:
            st.session_state["_qp_bad"] = _read_query_params(names)
        except Exception as e:  # noqa: BLE001 - a link never keeps the sidebar from rendering
            for key, value in DEFAULTS.items():
                st.session_state[key] = value
            st.session_state["_qp_bad"] = [f"the link could not be read ({type(e).__name__}); defaults used"]
        if "model" in st.query_params and "data" not in st.query_params \
                and not ui_lm.is_language_model(st.session_state["model"]):
            st.session_state["data"] = _default_source(st.session_state["model"])
        if ui_lm.is_language_model(st.session_state["model"]) and "a_granularity" not in st.query_params:
            st.session_state["a_granularity"] = "per_token"  # a link to a language model: its default
    errors: list[str] = []
    sb = st.sidebar
    sb.title("FP=xINT explorer")
    if st.session_state.get("_qp_bad"):
        sb.warning("Ignored link settings: " + "; ".join(st.session_state["_qp_bad"]))

    sb.subheader("Model")
    name = sb.selectbox("Model", names, key="model", on_change=_on_model_change,
                        format_func=lambda n: ui_lm.label(n) if ui_lm.is_language_model(n)
                        else f"{n} ({FAMILY.get(model_family(n), model_family(n))})")
    if ui_lm.is_language_model(name):
        return _lm_sidebar(name, sb, errors)
    spec = get_spec(name)
    with sb.expander("Upload weights for this architecture"):
        up = st.file_uploader(f"Checkpoint for {name} (.safetensors / .pt / .pth)", key="weights_upload",
                              type=["safetensors", "pt", "pth", "th"],
                              help="A state_dict of this architecture. Read with weights_only=True: never unpickled as code.")
        st.checkbox("Allow downloading missing pretrained weights", key="allow_download",
                    help="CIFAR-10 ResNets and torchvision models fetch their published checkpoints (needs internet).")

    sb.subheader("Data")
    source = sb.selectbox("Images", DATA_SOURCES, key="data", format_func=lambda s: _source_label(spec, s))
    limit = sb.number_input("Number of images (stratified subset)", *INT_RANGES["n_images"], key="n_images", step=100)
    zip_up = sb.file_uploader("Zip of images (class folders or flat)", type=["zip"], key="data_upload") \
        if source == "upload" else None

    _expansion_widgets(sb)

    ctx = Context(name)
    _device_and_config(ctx, sb, errors)
    if ctx.device is not None:
        try:
            weights = str(_save_upload(up)) if up is not None else None
            ctx.mref = (name, weights, ctx.device, bool(st.session_state.get("allow_download")))
            ctx.loaded = model_of(ctx.mref)
            if not ctx.loaded.trained:
                sb.warning(f"Untrained: {name} has random weights ({redact(ctx.loaded.note)}). "
                           "Accuracy features are off.")
        except Exception as e:  # noqa: BLE001 - ModelLoadError explains itself; anything else still must not crash
            errors.append(f"Model {name} is unavailable: {_first_line(e)}")
    try:
        if source == "bundled":
            where, why = _bundled_source(spec)
            if where is None:
                raise DataError(why)
        elif source == "upload":
            if zip_up is None:
                raise DataError("no zip uploaded yet: upload a zip of images in the sidebar, or choose another source")
            where = str(_save_upload(zip_up))
        else:
            where = "random"
        ctx.dref = (name, where, int(limit))
        ctx.data = images_of(ctx.dref)
        sb.caption(redact(ctx.data.source))
    except Exception as e:  # noqa: BLE001 - DataError explains itself
        errors.append(f"Data unavailable: {_first_line(e)}")
    _apply_allocation(ctx, sb)
    ctx.errors = tuple(errors)
    _write_query_params()
    st.session_state["_ctx"] = ctx
    return ctx


def _expansion_widgets(sb) -> None:
    sb.subheader("Expansion")
    c1, c2 = sb.columns(2)
    c1.number_input("Weight bits", *INT_RANGES["w_bits"], key="w_bits")
    c2.number_input("Weight terms", *INT_RANGES["w_terms"], key="w_terms")
    c1.number_input("Activation bits", *INT_RANGES["a_bits"], key="a_bits")
    c2.number_input("Activation terms", *INT_RANGES["a_terms"], key="a_terms")
    sb.selectbox("Level", C.LEVELS, key="level", help="tensor: weights only; layer: weights and inputs; "
                 "model: lockstep sum of basis models (same function as layer)")
    with sb.expander("Quantizer and policy", expanded=False):
        st.selectbox("Weight scale granularity", C.W_GRANULARITIES, key="w_granularity")
        st.selectbox("Activation scale granularity", C.A_GRANULARITIES, key="a_granularity")
        st.selectbox("Scale rule", C.SCALE_RULES, key="scale_rule")
        st.selectbox("Weight grid", C.GRIDS, key="w_grid")
        st.selectbox("Activation grid", C.GRIDS, key="a_grid")
        st.selectbox("Cross-term truncation", C.TRUNCATIONS, key="truncation")
        st.selectbox("First / last layer", C.FIRST_LAST, key="first_last")
    sb.subheader("Execution")
    c1, c2 = sb.columns(2)
    c1.selectbox("Device", DEVICES, key="device")
    c2.selectbox("Mode", C.MODES, key="mode")


def _device_and_config(ctx: Context, sb, errors: list[str]) -> None:
    try:
        dev = resolve_device(st.session_state["device"])
        ctx.device, ctx.device_label = dev.type, device_name(dev)
        sb.caption(f"Device in use: **{ctx.device_label}**")
    except ValueError as e:
        errors.append(f"Device: {e}")
    try:
        ctx.cfg = ExpansionConfig(**{k: st.session_state[k] for k in CFG_KEYS})
        sb.caption(f"Config: **{ctx.cfg.label()}** · the URL holds it: copy the link to share this view.")
    except ValueError as e:
        errors.append(f"Invalid configuration: {e}")
        sb.error("Invalid configuration: see the message on the page.")


def _lm_sidebar(name: str, sb, errors: list[str]) -> Context:
    """The sidebar for a language model: text instead of images, the same expansion widgets."""
    with sb.expander("Model options"):
        st.checkbox("Allow downloading missing pretrained weights", key="allow_download",
                    help="For hf:<name> models (CLI); the two bundled language models need no network.")
    dref = ui_lm.sidebar_text(sb, name)
    _expansion_widgets(sb)
    ctx = Context(name)
    _device_and_config(ctx, sb, errors)
    if ctx.device is not None:
        try:
            ctx.mref = (name, None, ctx.device, bool(st.session_state.get("allow_download")))
            ctx.loaded = ui_lm.load(*ui_lm._key(ctx.mref))
            ctx.dref = dref
            ctx.data = ui_lm.data_of(ctx.mref, dref)
            sb.caption(ctx.data.describe())
        except Exception as e:  # noqa: BLE001 - ModelLoadError / TextError explain themselves
            errors.append(f"Language model {name} is unavailable: {_first_line(e)}")
    ctx.errors = tuple(errors)
    _write_query_params()
    st.session_state["_ctx"] = ctx
    return ctx


ALLOCATION_KEY = "fpxint_allocated_config"  # set by the Allocate page: ExpansionConfig JSON with per-layer overrides


def _apply_allocation(ctx: Context, sb) -> None:
    """Uses the Allocate page's per-layer terms on every page while the sidebar still matches it.

    The allocation was chosen for one model and one sidebar configuration: it is offered only while
    every other setting is the same and every overridden layer exists in the loaded model.
    """
    raw = st.session_state.get(ALLOCATION_KEY)
    if not raw or ctx.cfg is None or ctx.loaded is None:
        return
    alloc = ExpansionConfig.from_json(raw)
    names = {n for n, _ in expandable_layers(ctx.loaded.model)}
    same = alloc.replace(overrides={}) == ctx.cfg.replace(overrides={})
    if not same or not {n for n, _ in alloc.overrides} <= names:
        sb.caption("The per-layer allocation from **Allocate terms** does not match this model or these "
                   "settings, so it is not applied.")
        return
    if sb.checkbox(f"Use the allocated per-layer terms ({len(alloc.overrides)} layers)", value=True,
                   key="use_allocation", help="Chosen on the Allocate terms page; uncheck for uniform terms."):
        ctx.cfg = alloc


# ----- page helpers ----------------------------------------------------------------------------
def _legacy_routing() -> bool:
    """Whether Streamlit's legacy pages/ routing ran this page file directly, without app.py.

    Streamlit consults the pages/ folder until st.navigation has run once in the process: on a
    server's first run (and on every AppTest run) a link to a page starts the page file itself.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the legacy routing
        return False
    return bool(PagesManager.uses_pages_directory)


def chosen_bits(bits) -> tuple[int, ...]:
    """The sorted bit widths of a multiselect; stops the page with a message when none is chosen."""
    bits_t = tuple(sorted(bits))
    if not bits_t:
        st.error("Choose at least one bit width.")
        st.stop()
    return bits_t


def header(title: str, intro: str = "", *, language_models: bool = False) -> Context:
    """Page title, what is loaded, and every sidebar error (the page keeps its previous results).

    A page that does not handle language models (`language_models=False`) stops here with a message
    saying so when one is chosen.
    """
    if _legacy_routing():  # run app.py instead: its navigation runs this page with the shared sidebar
        runpy.run_path(str(APP), run_name="__main__")
        st.stop()
    ctx = context()
    st.title(title)
    if intro:
        st.markdown(intro)
    st.caption(ctx.describe())
    for err in ctx.errors:
        st.error(err)
    if not language_models and ui_lm.is_language_model(ctx.model_name):
        ui_lm.not_yet(ctx, title)
        st.stop()
    return ctx


def chart(fig, name: str) -> None:
    """Renders a figure with Streamlit's theme and remembers it for the HTML report."""
    st.plotly_chart(fig, theme="streamlit", key=f"chart_{name}")
    st.session_state.setdefault("_figures", {})[name] = fig


def run_block(name: str, ctx: Context, compute: Callable[[], Any], extra: str = "", *, auto: bool = False,
              label: str = "Run", work: dict | None = None) -> Any:
    """Run / Stop buttons, then the newest successful result of this block (None before the first).

    `compute` is a call into a cached function; the result is kept in the session with its key
    (model + config + data + `extra`). Going back to a configuration already computed costs nothing
    and needs no click. An invalid configuration, an error or a Stop keeps the previous result.
    A new run is first estimated (`estimate(ctx, **work)`: the heaviest config, passes, images) and
    refused over the server's limits, then waits its turn in the server-wide queue.
    """
    key = f"{ctx.mref}|{ctx.cfg_json}|{ctx.dref}|{extra}" if ctx.ready else None
    slot, done = f"_result_{name}", st.session_state.setdefault("_done", set())
    row = st.container(horizontal=True, vertical_alignment="center")
    clicked = row.button(label, type="primary", key=f"run_{name}", disabled=key is None)
    stopped = row.button("Stop", key=f"stop_{name}", help="Interrupts a running computation; results on screen stay.")
    c3 = row.empty()
    if stopped:
        st.info("Stopped. The results below are from the last completed run.")
    elif key is not None and (clicked or key in done or (auto and slot not in st.session_state)):
        try:
            t0 = time.perf_counter()
            result = compute() if key in done and not clicked else _admitted(ctx, compute, work or {})
            st.session_state[slot] = (key, ctx.describe(), result, time.perf_counter() - t0)
            done.add(key)
        except admission.AdmissionError as e:
            st.error(f"{label} refused: {e}", icon=":material/block:")
        except Exception as e:  # noqa: BLE001 - any engine failure becomes a message, never a traceback
            st.error(f"{label} failed: {_first_line(e)}. The results below (if any) are from the last successful run.")
    stored = st.session_state.get(slot)
    if stored is None:
        c3.caption("Press Run to compute with the sidebar's configuration.")
        return None
    if stored[0] != key:
        st.warning(f"Showing earlier results ({stored[1]}). Press **{label}** for the current settings.")
    else:
        c3.caption(f"Shown: the current settings (computed or cached; last call {stored[3]:.2f} s).")
    return stored[2]


def _first_line(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        return "out of memory: use fewer images, fewer terms or simulate mode"
    text = str(e).strip() or type(e).__name__
    return redact(text.splitlines()[0])[:300]


class _Progress:
    """A progress bar created inside a cached function (so cache hits replay it without errors).

    Called as f(fraction, text) by fpxint.views (which maps its stages onto [0, 1]); each update is
    also where Streamlit can stop the run.
    """

    def __init__(self, what: str):
        self.slot, self.what, self.last = st.empty(), what, -1.0

    def __call__(self, fraction: float, text: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if fraction - self.last >= 0.02 or fraction >= 1.0:  # fewer messages to replay
            self.last = fraction
            self.slot.progress(fraction, text=f"{self.what}: {text}" if text else self.what)

    def done(self) -> None:
        self.slot.empty()


# ----- cached computations (keys: model ref + config JSON + data ref + options) ------------------
# The work is in fpxint.views (plain functions); here it is cached, and its progress drawn.
def table(df: pd.DataFrame, **kw) -> None:
    """A dataframe tall enough to show every row (tables here are short)."""
    styled = df.style.format(lambda v: f"{v:.4g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else v)
    st.dataframe(styled, height=35 * (len(df) + 1) + 3, width="stretch", **kw)


metrics_table = views.metrics_table  # pages call ui.metrics_table beside ui.table


PAGE_PARAMS = ("step",)  # URL parameters a page owns (the Explain page's step): the sidebar keeps them

# The page helpers live in their own modules (read in one sitting); pages keep calling them as ui.X.
from .results import (accuracy, basis_demo, compare, convergence, expanded_layer_names,  # noqa: E402
                      expansion_metrics, export_bytes, layer_terms, residuals)
from .slides import explain_part, page_step, slide_assets, slide_chart  # noqa: E402
from .admit import _admitted, estimate, limits, probe_size, sweep_work  # noqa: E402
