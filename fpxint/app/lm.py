"""The app's language-model half (Streamlit; `sidebar.py` owns the shared sidebar and calls in here).

When the sidebar's model is a language model, `sidebar_text()` replaces the image-data widgets with
text ones (token windows of WikiText-2, or STS-B pairs), and the Expand and Layer residuals pages render
through `expand_page` / `residuals_page`; every other page through `page()`, which runs its language-model
version from `app/lm_pages.py` (or, for the Explain page, says in one sentence why it is image-only).
"Hugging Face model…" in the model menu (`HF_CHOICE`) opens a text input for `hf:<name or path>`, which the
URL keeps. On this server (every visitor is a thread of one process) such a model is a local folder only
inside the operator's FPXINT_HF_ROOT (none when unset), comes from the hub only when the operator sets
FPXINT_HF_DOWNLOAD=1 and the visitor ticks the box, and is sized from its config before any weights are
read: over FPXINT_MAX_RUN_MB (or FPXINT_MAX_PARAMS) it is refused (`hf_policy`, `load`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from .. import admission
from .. import lm as L
from .. import plots_lm
from ..config import ExpansionConfig
from ..text import STS_TEST, WIKITEXT, read_sts, token_windows
from ..zoo import cache_dir, find_shared
from ..zoo.hf import HF_PREFIX, get_lm_spec, is_language_model, lm_names, load_lm
from ..zoo.hf_files import ROOT_VAR
from .admit import limits, settings
from .loaders import ModelRef, TextRef

__all__ = ["is_language_model", "lm_names", "label", "sidebar_text", "load", "data_of", "expand_page",
           "residuals_page", "HF_CHOICE", "hf_name", "HFPolicy", "hf_policy", "download_option", "url_name"]

HF_CHOICE = HF_PREFIX  # the menu entry "Hugging Face model…"; the name typed beside it completes it
DOWNLOAD_VAR = "FPXINT_HF_DOWNLOAD"
MAX_NAME_CHARS = 256  # a hub id is at most 193 characters; a folder name under the root, a little more
INTROS = {
    "Accuracy recovery": "Perplexity on the sidebar's text windows (STS-B Spearman for an encoder) as terms are "
                         "added, for several bit widths (weights and activations alike), against the FP model on "
                         "the same tokens. One term is plain round-to-nearest.",
    "Compare": "**A** is the sidebar's configuration; **B** starts with one more term per side and is edited here. "
               "Both are scored on the same model and text.",
    "Export": "Download the expanded language model (integer terms and scales of every Linear layer as "
              "safetensors, the config as JSON; reload with `fpxint.export.load_expanded` on the FP model), its "
              "metrics, and an HTML report of the figures drawn in this session.",
    "Convergence": "The residual series of every Linear layer converges geometrically: with *b*-bit terms and the "
                   "max rule, each term shrinks the max-abs weight residual by about 1/(2^b - 2). Dashed: the proven "
                   "bound; solid: measured. Below, the next-token logits' error by terms.",
    "Basis models": "Basis model (i, j) holds weight term *i* and consumes input term *j* in every Linear layer. "
                    "Here: the integer terms of one layer, and the check that adding the basis models in any order "
                    "rebuilds the expanded model.",
    "Allocate terms": "Beyond the paper: each Linear layer gets its own weight and activation term counts under a "
                      "budget of integer GEMMs. The noise of each layer is measured on the next-token logits of a "
                      "calibration window taken from the text **after** the scored windows (disjoint from them).",
}
WINDOWS, SEQ_LEN, PAIRS = (1, 64), (16, 2048), (8, 1379)
DEFAULTS = {"lm_windows": 2, "lm_seq_len": 256, "lm_pairs": 64}
FIRST = (1, 128)  # (windows, tokens) of a causal LM's automatic first result: a quarter of the default text


def first_dref(dref: TextRef) -> TextRef | None:
    """The text of a causal LM's automatic first result: the sidebar's first window, cut to 128 tokens (the
    same tokens the full run starts with). None for an encoder (its pairs are few and fast)."""
    if not dref.seq_len:
        return None
    return TextRef(dref.name, min(dref.count, FIRST[0]), min(dref.seq_len, FIRST[1]))


def first_note(ctx, dref: TextRef) -> str:
    """What the page says beside the automatic first result."""
    if dref == ctx.dref:
        return "Computed on opening, on the sidebar's text."
    return (f"**First result, on less text**: {_data(ctx.mref, dref).describe()}, computed on opening. Press **Run** "
            f"for the sidebar's {ctx.data.describe()}.")


def label(name: str) -> str:
    if name == HF_CHOICE:
        return "Hugging Face model… (language model by name or local folder)"
    spec = get_lm_spec(name)
    return f"{name} (language model: {'perplexity' if spec.task == 'causal_lm' else 'STS-B Spearman'})"


# ----- the operator's rules for "hf:" models ------------------------------------------------------
@dataclass(frozen=True)
class HFPolicy:
    """What this server lets a visitor load by name: local folders under `root` (None: none), hub downloads."""

    root: str | None
    download: bool
    problems: tuple[str, ...] = ()  # malformed settings, shown as warnings (the safe choice applies)


def hf_policy() -> HFPolicy:
    """FPXINT_HF_ROOT and FPXINT_HF_DOWNLOAD from st.secrets or the environment (`admit.settings`)."""
    s, problems, root = settings(), [], None
    raw_root = str(s.get(ROOT_VAR) or "").strip()
    if raw_root:
        folder = Path(raw_root).expanduser()
        if folder.is_dir():
            root = str(folder.resolve())
        else:  # never echo the server's path to visitors
            problems.append(f"{ROOT_VAR} is not an existing folder, so no local folders load")
    raw = str(s.get(DOWNLOAD_VAR, "")).strip().lower()
    download = raw in ("1", "true", "yes", "on")
    if raw and not download and raw not in ("0", "false", "no", "off"):
        problems.append(f"{DOWNLOAD_VAR}={raw[:20]!r} is not 1 or 0, so downloads stay off")
    return HFPolicy(root, download, tuple(problems))


def download_option(sb, policy: HFPolicy) -> bool:
    """The visitor's download box, live only where the operator allows downloads; True when both agree."""
    help_on = ("For Hugging Face models by name (needs internet); the size is checked from the config before "
               "any weights are downloaded. The two bundled language models and local folders need no network.")
    help_off = (f"This server downloads no language models (its operator allows it with {DOWNLOAD_VAR}=1); "
                "models already in its Hugging Face cache and the bundled ones still load.")
    ticked = st.checkbox("Allow downloading missing pretrained weights", key="allow_download",
                         disabled=not policy.download, help=help_on if policy.download else help_off)
    for p in policy.problems:
        sb.warning(f"Server settings: {p}.")
    return policy.download and bool(ticked)


def url_name(raw: str) -> str | None:
    """The name after ``hf:`` in a link's model parameter, or None when it cannot be one."""
    name = raw[len(HF_PREFIX):].strip() if raw.startswith(HF_PREFIX) else ""
    return name if name and len(name) <= MAX_NAME_CHARS and name.isprintable() else None


def _admit(name: str):
    lim, _ = limits()  # a malformed limit is reported by the page's run block; the defaults apply here
    return lambda size: admission.check_model(name, size.params, size.bytes, lim)


# ----- cached loaders ------------------------------------------------------------------------------
@st.cache_resource(max_entries=2, show_spinner="Loading the language model (SmolLM2's first load on a machine "
                   "converts its GGUF file and keeps a float copy; later loads read the copy)…")
def load(name: str, device: str, allow_download: bool, root: str | None):
    """One language model per (name, device, download, root); an `hf:` one is confined to `root` and sized
    against the server's limits before its weights are read (a refusal raises and is not cached)."""
    return load_lm(name, cache_dir=cache_dir(), allow_download=allow_download, device=device, local_root=root,
                   confine=True, admit=_admit(name))


@st.cache_resource(max_entries=4, show_spinner="Tokenizing…")
def _data(mref: ModelRef, dref: TextRef) -> L.LMData:
    lm, shared = load(*_key(mref)), find_shared()
    if shared is None:
        raise ValueError("the shared folder (WikiText-2, STS-B) is not found: set FPXINT_SHARED")
    if lm.spec.task == "causal_lm":
        return L.LMData(windows=token_windows(lm.tokenizer, shared / WIKITEXT, dref.seq_len, dref.count))
    return L.LMData.sts(lm.tokenizer, *read_sts(shared / STS_TEST, dref.count), source=STS_TEST.name)


def _key(mref) -> tuple:  # a ModelRef without its (image-only) weights upload, with the server's model folder
    return mref.name, mref.device, mref.allow_download, hf_policy().root


def data_of(mref: ModelRef, dref: TextRef) -> L.LMData:
    return _data(mref, dref)


@st.cache_resource(max_entries=4, show_spinner="Running the FP model once (the reference)…")
def _reference(mref: ModelRef, dref: TextRef):
    return L.reference(load(*_key(mref)).model, data_of(mref, dref))


# ----- sidebar -------------------------------------------------------------------------------------
def hf_name(sb) -> str | None:
    """The text input shown when "Hugging Face model…" is chosen; the full `hf:<name>`, or None while empty."""
    typed = sb.text_input("Hugging Face model name or local folder", key="hf_name", placeholder="e.g. gpt2",
                          max_chars=MAX_NAME_CHARS,
                          help="A causal LM or an encoder with safetensors weights, loaded with transformers. "
                               f"Local folders: only inside the server's model folder ({ROOT_VAR}), by name. "
                               "Without downloads (below) only models in the server's Hugging Face cache load.")
    typed = (typed or "").strip()
    return HF_PREFIX + typed if typed else None


def sidebar_text(sb, name: str) -> TextRef:
    """The text widgets of a language model; returns the data description."""
    for k, v in DEFAULTS.items():
        st.session_state.setdefault(k, v)
    spec = get_lm_spec(name)
    if spec.caveat:
        sb.info(spec.caveat)
    sb.subheader("Text")
    if spec.task == "causal_lm":
        n = sb.number_input("Windows of WikiText-2 test", *WINDOWS, key="lm_windows",
                            help="Consecutive windows from the start of wiki.test.raw; perplexity over all of them.")
        seq_len = sb.number_input("Tokens per window", *SEQ_LEN, key="lm_seq_len", step=64)
        return TextRef(name, int(n), int(seq_len))
    n = sb.number_input("STS-B test pairs (evenly spaced)", *PAIRS, key="lm_pairs", step=64)
    return TextRef(name, int(n))


# ----- cached computations -------------------------------------------------------------------------
@st.cache_data(max_entries=64, show_spinner=False)
def metrics(mref: ModelRef, cfg_json: str, dref: TextRef) -> dict:
    model, data = load(*_key(mref)).model, data_of(mref, dref)
    cfg = ExpansionConfig.from_json(cfg_json)
    ref = _reference(mref, dref)
    slot = st.empty()
    t0 = time.perf_counter()
    r = L.evaluate_lm(model, cfg, data, ref, device=mref.device,
                      progress=lambda f, t: slot.progress(f, text=f"{cfg.label()}: {t}"))
    slot.empty()
    return {**r, "seconds": time.perf_counter() - t0, "label": cfg.label(), "data": data.describe()}


@st.cache_data(max_entries=32, show_spinner=False)
def layers(mref: ModelRef, cfg_json: str, dref: TextRef, terms: tuple[int, ...], tokens: int) -> pd.DataFrame:
    model, data = load(*_key(mref)).model, data_of(mref, dref)
    slot = st.empty()
    df = L.layer_report(model, ExpansionConfig.from_json(cfg_json), data.probe(tokens), terms,
                        progress=lambda f, t: slot.progress(f, text=f"layers: {t}"))
    slot.empty()
    return df


# ----- pages ---------------------------------------------------------------------------------------
def _caveat(ctx) -> None:
    if ctx.loaded is not None and ctx.loaded.spec.caveat:
        st.warning(ctx.loaded.spec.caveat)


def expand_page(ctx, run_block) -> None:
    """Expand for a language model: perplexity (or Spearman) against FP, agreement, KL, and cost per token."""
    _caveat(ctx)
    fd = first_dref(ctx.dref) if ctx.ready else None
    first = (lambda: metrics(ctx.mref, ctx.cfg_json, fd), first_note(ctx, fd)) if fd else None
    r = run_block("expand_lm", ctx, lambda: metrics(ctx.mref, ctx.cfg_json, ctx.dref), first=first)
    if r is None:
        return
    c = r["cost"]
    cols = st.columns(4)
    if "ppl" in r:
        cols[0].metric("FP perplexity", f"{r['fp_ppl']:.3f}", help=r["data"])
        cols[1].metric(f"Expanded perplexity ({r['label']})", f"{r['ppl']:.3f}",
                       delta=f"{r['ppl'] - r['fp_ppl']:+.3f} vs FP", delta_color="inverse")
        cols[2].metric("Next-token agreement with FP", f"{100 * r['agreement']:.2f} %",
                       help=f"Top-1 next token equal to FP's, over {r['tokens']} scored tokens")
        cols[3].metric("KL(FP ‖ expanded)", f"{r['kl']:.4f}", help="Mean per scored token, nats")
    else:
        cols[0].metric("FP STS-B Spearman", f"{r['fp_spearman']:.4f}", help=r["data"])
        cols[1].metric(f"Expanded Spearman ({r['label']})", f"{r['spearman']:.4f}",
                       delta=f"{r['spearman'] - r['fp_spearman']:+.4f} vs FP")
        cols[2].metric("Embedding cosine to FP", f"{r['cosine_to_fp']:.4f}")
        cols[3].metric("Pairs", f"{r['pairs']}")
    cols = st.columns(4)
    cols[0].metric("Effective bits / weight", f"{c['effective_bits']:.2f}")
    cols[1].metric("Integer GEMMs / token", f"{c['int_gemms']}", help="One per kept cross term per Linear layer")
    cols[2].metric("BOPs vs FP", f"{100 * c['bops_vs_fp']:.2f} %",
                   help=f"{c['macs'] / 1e6:.1f} M MACs per token in the Linear layers")
    cols[3].metric("Time taken", f"{r['seconds']:.1f} s", help="Expand + evaluate (the FP reference is cached)")
    st.caption(f"{r['data']}. Expanded: every nn.Linear ({c['expanded_layers']} of {c['layers']}), the LM head "
               "included; embeddings, attention scores, softmax and normalization stay in FP.")


def residuals_page(ctx, run_block) -> None:
    """Every Linear layer by block and kind, and its one-layer error against the input outlier statistic."""
    _caveat(ctx)
    c1, c2 = st.columns(2)
    max_terms = c1.segmented_control("Terms", [1, 2, 3, 4], default=2, key="lm_res_terms", required=True,
                                     format_func=lambda k: f"1..{k}")
    tokens = c2.segmented_control("Probe tokens", [32, 64, 128], default=64, key="lm_res_tokens", required=True)
    terms = tuple(range(1, int(max_terms) + 1))
    df = run_block("residuals_lm", ctx, lambda: layers(ctx.mref, ctx.cfg_json, ctx.dref, terms, int(tokens)),
                   extra=f"{terms}|{tokens}")
    if df is None:
        return
    k = st.select_slider("Number of terms shown", options=sorted(df["terms"].unique()), key="lm_res_k")
    st.plotly_chart(plots_lm.block_kind_map(df, int(k)), key="lm_block_kind")
    st.plotly_chart(plots_lm.outlier_scatter(df, 1), key="lm_outlier")
    by_kind = df[df["terms"] == k].groupby("kind").agg(layers=("layer", "size"), median_error=("rel_l2", "median"),
                                                       worst_error=("rel_l2", "max"), median_outlier=("outlier", "median"))
    st.dataframe(by_kind, width="stretch")
    worst = df[df["terms"] == k].nlargest(10, "rel_l2")[["layer", "kind", "block", "outlier", "rel_l2"]]
    st.markdown("Worst ten layers:")
    st.dataframe(worst, hide_index=True, width="stretch")
    st.download_button("Download the table (CSV)", df.to_csv(index=False).encode(), file_name="lm_layers.csv",
                       mime="text/csv", key="lm_res_csv")
