"""The shared sidebar and its URL: rendered once per run by the app's entry (fpxint.app.main.run), it builds
ONE `ExpansionConfig` and the `Context` every page reads, and keeps every setting that differs from the
default in the URL (`st.query_params`), so that a link reproduces the view."""
from __future__ import annotations

import time

import streamlit as st

from .. import config as C
from ..config import ExpansionConfig
from ..data import DataError
from ..model import device_name, expandable_layers, resolve_device
from ..zoo import find_shared, get_spec, model_family, model_names
from ..zoo.paths import shared_dataset
from . import lm as ui_lm
from .context import (ALLOCATION_KEY, CFG_KEYS, CHOICES, DATA_SOURCES, DEFAULTS, DEVICES, FAMILY, INT_RANGES,
                      MAX_PARAM_CHARS, PAGE_PARAMS, Context)
from .loaders import DataRef, ModelRef, _first_line, _save_upload, _swept, images_of, model_of, redact


def _read_query_params(names: list[str]) -> list[str]:
    """Copies valid URL parameters into the widgets' state; returns one line per rejected one."""
    bad = []
    choices = {**CHOICES, "model": tuple(names)}
    for key in DEFAULTS:
        if key not in st.query_params:
            continue
        raw = str(st.query_params[key])
        shown = repr(raw if len(raw) <= 24 else raw[:20] + "…")
        if key == "model" and raw.startswith(ui_lm.HF_CHOICE) and raw != ui_lm.HF_CHOICE:
            typed = ui_lm.url_name(raw)  # "hf:<name>": the entry and its text box; loading applies the rules
            if typed is None:
                bad.append(f"model={shown} (hf: and a model name of at most {ui_lm.MAX_NAME_CHARS} characters)")
            else:
                st.session_state["model"], st.session_state["hf_name"] = ui_lm.HF_CHOICE, typed
            continue
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
    typed = str(st.session_state.get("hf_name") or "").strip()
    if want.get("model") == ui_lm.HF_CHOICE and typed:
        want["model"] = ui_lm.HF_CHOICE + typed  # the typed name, so that a reload or a shared link keeps it
    want.update({k: st.query_params[k] for k in PAGE_PARAMS if k in st.query_params})  # a page's own, kept
    if want != {k: st.query_params[k] for k in st.query_params}:
        st.query_params.from_dict(want)


def _default_source(name: str) -> str:
    return "random" if model_family(name) == "torchvision" else "bundled"  # torchvision's are untrained offline


def default_refs() -> tuple[ModelRef, str, DataRef]:
    """(mref, cfg_json, dref) that `sidebar()` builds from DEFAULTS for a visitor with a plain URL."""
    name = DEFAULTS["model"]
    where, why = _bundled_source(get_spec(name))
    if where is None:
        raise DataError(why)
    cfg = ExpansionConfig(**{k: DEFAULTS[k] for k in CFG_KEYS})
    return ModelRef(name, None, resolve_device(DEFAULTS["device"]).type, False), cfg.to_json(), \
        DataRef(name, where, int(DEFAULTS["n_images"]))


def prewarm() -> float:
    """Compute the default view into the app's caches at server start (the st.App lifespan in
    fpxint.app.main), so the first visitor finds the built-in model, its images and the Expand page's
    metrics ready. Returns seconds."""
    from .results import expansion_metrics

    t0 = time.perf_counter()
    expansion_metrics(*default_refs())
    return time.perf_counter() - t0

def lm_default_refs(name: str) -> tuple[ModelRef, str, tuple]:
    """(mref, cfg_json, dref) that `sidebar()` builds for a visitor who picks language model `name`."""
    cfg = ExpansionConfig(**{k: DEFAULTS[k] for k in CFG_KEYS}).replace(a_granularity="per_token")  # _on_model_change
    spec = ui_lm.get_lm_spec(name)
    d = ui_lm.DEFAULTS
    dref = (name, d["lm_windows"], d["lm_seq_len"]) if spec.task == "causal_lm" else (name, d["lm_pairs"], 0)
    return ModelRef(name, None, resolve_device(DEFAULTS["device"]).type, False), cfg.to_json(), dref


def prewarm_lm(name: str) -> float:
    """Loads language model `name` and computes the first results of its Expand and Accuracy recovery pages
    (their defaults) into the app's caches, at server start when the operator asks (FPXINT_WARM_LM).
    Returns seconds."""
    t0 = time.perf_counter()
    mref, cfg_json, dref = lm_default_refs(name)
    fd = ui_lm.first_dref(dref) or dref
    base = ExpansionConfig.from_json(cfg_json)
    for k in range(1, 4):  # the Accuracy recovery page's default: 4 bits, 1..3 terms (the Expand page's among them)
        ui_lm.metrics(mref, base.replace(w_bits=4, a_bits=4, overrides={}).with_terms(k).to_json(), fd)
    ui_lm.metrics(mref, cfg_json, fd)
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
    names = model_names() + ui_lm.lm_names() + [ui_lm.HF_CHOICE]  # no spec is built for the menu: torchvision's import costs seconds
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    _swept()
    if not st.session_state.get("_qp_read"):  # first load: the URL wins over the defaults
        _read_link_once(names)
    errors: list[str] = []
    sb = st.sidebar
    sb.title("FP=xINT explorer")
    if st.session_state.get("_qp_bad"):
        sb.warning("Ignored link settings: " + "; ".join(st.session_state["_qp_bad"]))

    sb.subheader("Model")
    name = sb.selectbox("Model", names, key="model", on_change=_on_model_change,
                        format_func=lambda n: ui_lm.label(n) if ui_lm.is_language_model(n)
                        else f"{n} ({FAMILY.get(model_family(n), model_family(n))})")
    ctx = _lm_sidebar(name, sb, errors) if ui_lm.is_language_model(name) else _image_sidebar(name, sb, errors)
    ctx.errors = tuple(errors)
    _write_query_params()
    st.session_state["_ctx"] = ctx
    return ctx


def _read_link_once(names: list[str]) -> None:
    """The URL's settings, read into the widgets' state on a session's first run."""
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


def _image_sidebar(name: str, sb, errors: list[str]) -> Context:
    """The sidebar for an image classifier: weights upload, images, the expansion, the device."""
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
            ctx.mref = ModelRef(name, weights, ctx.device, bool(st.session_state.get("allow_download")))
            ctx.loaded = model_of(ctx.mref)
            if not ctx.loaded.trained:
                sb.warning(f"Untrained: {name} has random weights ({redact(ctx.loaded.note)}). "
                           "Accuracy features are off.")
        except Exception as e:  # noqa: BLE001 - ModelLoadError explains itself; anything else still must not crash
            errors.append(f"Model {name} is unavailable: {_first_line(e)}")
    try:
        ctx.dref = DataRef(name, _image_source(spec, source, zip_up), int(limit))
        ctx.data = images_of(ctx.dref)
        sb.caption(redact(ctx.data.source))
    except Exception as e:  # noqa: BLE001 - DataError explains itself
        errors.append(f"Data unavailable: {_first_line(e)}")
    _apply_allocation(ctx, sb)
    return ctx


def _image_source(spec, source: str, zip_up) -> str:
    """What the image loader reads for the chosen source; DataError says why there is nothing."""
    if source == "bundled":
        where, why = _bundled_source(spec)
        if where is None:
            raise DataError(why)
        return where
    if source == "upload":
        if zip_up is None:
            raise DataError("no zip uploaded yet: upload a zip of images in the sidebar, or choose another source")
        return str(_save_upload(zip_up))
    return "random"


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
    if name == ui_lm.HF_CHOICE:
        name = ui_lm.hf_name(sb) or name
    with sb.expander("Model options", expanded=name.startswith(ui_lm.HF_CHOICE)):
        download = ui_lm.download_option(sb, ui_lm.hf_policy())
    if name == ui_lm.HF_CHOICE:  # nothing typed yet: sidebar() files the error and stores the context
        errors.append("Type a Hugging Face model name (e.g. gpt2) or a local folder in the sidebar.")
        return Context(name)
    dref = ui_lm.sidebar_text(sb, name)
    _expansion_widgets(sb)
    ctx = Context(name)
    _device_and_config(ctx, sb, errors)
    if ctx.device is not None:
        try:
            ctx.mref = ModelRef(name, None, ctx.device, download)
            ctx.loaded = ui_lm.load(*ui_lm._key(ctx.mref))
            ctx.dref = dref
            ctx.data = ui_lm.data_of(ctx.mref, dref)
            sb.caption(ctx.data.describe())
        except Exception as e:  # noqa: BLE001 - ModelLoadError / TextError explain themselves
            errors.append(f"Language model {name} is unavailable: {_first_line(e)}")
    return ctx


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


