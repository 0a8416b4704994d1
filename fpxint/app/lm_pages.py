"""The language-model versions of the app's other pages (Streamlit; `app/lm.py` holds the sidebar, the
cached loaders and the Expand / Layer residuals pages, and dispatches here by page title).

Accuracy recovery becomes perplexity (or STS-B Spearman) vs terms, Compare and Export work on the language
model, Convergence and Basis models show the same weight series on its Linear layers, and Allocate terms
calibrates on text windows after the scored ones. Every configuration is scored through `lm.metrics`
(cached per model + config + text), so a config computed on one page is free on the others.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st
from . import lm as ui_lm
from .charts import chart  # themed, and kept for the Export page's HTML report
from .. import analysis, plots, plots_lm, views
from .. import lm as L
from ..config import ExpansionConfig
from ..layers import expand_layer
from ..model import expand, expandable_layers
from ..text import WIKITEXT, token_windows
from ..zoo import find_shared
from .loaders import ModelRef, TextRef

EXPLAIN = ("**{page}** walks one image through an image classifier (pixels, convolution terms, top-1): its five "
           "screens are drawn on image shapes. For {model}, the same story is told by **Expand** (perplexity by "
           "terms), **Convergence** and **Layer residuals** (why one-term activations fail where they fail).")
ENCODER_ALLOCATE = ("**Allocate terms** on a sentence encoder needs calibration pairs disjoint from the scored "
                    "STS-B pairs, and the shared data has only the test split; it is offered for causal LMs, whose "
                    "calibration windows are taken from the text just after the scored windows.")
BASIS_DEMO_MAX_PARAMS = 50_000_000  # the AbelianAdd demo holds w_terms x a_terms basis networks at once


def page(ctx, title: str, run_block) -> None:
    """The language-model version of the page titled `title` (pages other than Expand and Layer residuals)."""
    ui_lm._caveat(ctx)
    render = PAGES.get(title)
    if render is None:  # the Explain page's titles are its steps
        st.info(EXPLAIN.format(page="Explain", model=ctx.model_name))
        return
    st.markdown(ui_lm.INTROS[title])
    render(ctx, run_block)


def metrics_table(results: dict[str, dict]) -> pd.DataFrame:
    """One row per metric, one column per configuration (results of `lm.metrics`)."""
    rows = {}
    for name, r in results.items():
        c = r["cost"]
        quality = ({"FP perplexity": r["fp_ppl"], "perplexity": r["ppl"], "next-token agreement (%)": 100 * r["agreement"],
                    "KL(FP‖expanded) nats/token": r["kl"], "scored tokens": r["tokens"]} if "ppl" in r else
                   {"FP STS-B Spearman": r["fp_spearman"], "STS-B Spearman": r["spearman"],
                    "embedding cosine to FP": r["cosine_to_fp"], "pairs": r["pairs"]})
        rows[name] = {**quality, "effective bits / weight": c["effective_bits"], "integer GEMMs / token": c["int_gemms"],
                      "weight memory (MB)": c["weight_mb"], "BOPs vs FP (%)": 100 * c["bops_vs_fp"],
                      "time (s)": r["seconds"]}
    return pd.DataFrame(rows)


def _score(ctx, cfgs: list[ExpansionConfig], dref: TextRef | None = None) -> pd.DataFrame:
    """Scores each config through the cached `lm.metrics` on `dref` (default: the sidebar's text; one progress
    bar over all), one row each. Rows show as they come (cheapest config first on the pages), so the first
    number is on screen after one expansion, not after all of them."""
    bar, partial, rows = st.progress(0.0, text="scoring"), st.empty(), []
    for i, c in enumerate(cfgs):
        if rows:
            partial.dataframe(pd.DataFrame(rows)[["config", *[k for k in ("fp_ppl", "ppl", "fp_spearman", "spearman")
                                                              if k in rows[0]]]], hide_index=True)
        bar.progress(i / len(cfgs), text=f"{c.label()} ({i + 1}/{len(cfgs)})")
        r = ui_lm.metrics(ctx.mref, c.to_json(), dref or ctx.dref)
        cost = r["cost"]
        rows.append({"config": c.label(), "w_bits": c.w_bits, "a_bits": c.a_bits, "terms": c.w_terms,
                     **{k: v for k, v in r.items() if k not in ("cost", "label", "data")},
                     "effective_bits": cost["effective_bits"], "int_gemms": cost["int_gemms"],
                     "bops_vs_fp": cost["bops_vs_fp"]})
    bar.empty()
    partial.empty()
    return pd.DataFrame(rows)


# ----- Accuracy recovery: perplexity vs terms -------------------------------------------------------
def accuracy_page(ctx, run_block) -> None:
    """Perplexity (or Spearman) as terms are added, for several bit widths, against FP on the same text."""
    c1, c2, c3 = st.columns([3, 1, 2])
    bits = c1.multiselect("Bit widths (weights and activations)", [2, 3, 4, 6, 8], default=[4], key="lm_acc_bits")
    max_terms = c2.number_input("Up to terms", 1, 4, value=3, key="lm_acc_terms")
    x = c3.segmented_control("x axis", list(plots_lm.LM_X), default="terms", key="lm_acc_x", required=True,
                             format_func={"terms": "terms", "effective_bits": "bits / weight", "bops_vs_fp": "BOPs"}.get)
    bits_t = tuple(sorted(bits))
    if not bits_t:
        st.error("Choose at least one bit width.")
        return
    base = ctx.cfg or ExpansionConfig()
    cfgs = [base.replace(w_bits=b, a_bits=b, overrides={}).with_terms(k) for b in bits_t for k in range(1, max_terms + 1)]
    st.caption(f"{len(cfgs)} configurations, each one expansion and one pass over the text; each is cached, so "
               "Expand and Compare reuse them.")
    fd = ui_lm.first_dref(ctx.dref) if ctx.ready else None
    first = (lambda: _score(ctx, cfgs, fd), ui_lm.first_note(ctx, fd)) if fd else None
    df = run_block("accuracy_lm", ctx, lambda: _score(ctx, cfgs), extra=f"{bits_t}|{max_terms}", first=first)
    if df is None:
        return
    metric = "ppl" if "ppl" in df else "spearman"
    chart(plots_lm.quality_vs_terms(df, float(df[f"fp_{metric}"].iloc[0]), metric, x), "lm_quality_vs_terms")
    st.dataframe(df, hide_index=True, width="stretch")
    st.download_button("Download the grid (CSV)", df.to_csv(index=False).encode(), file_name="lm_grid.csv",
                       mime="text/csv", key="lm_acc_csv")


# ----- Compare ----------------------------------------------------------------------------------------
def compare_page(ctx, run_block) -> None:
    """The sidebar's config (A) against B, edited here, on the same model and text."""
    base = ctx.cfg or ExpansionConfig()
    fields = {"w_bits": range(1, 9), "w_terms": range(1, 5), "a_bits": range(1, 9), "a_terms": range(1, 5),
              "a_granularity": ("per_token", "per_tensor"), "truncation": ("full", "total_order", "weight_only")}
    cols, values = st.columns(len(fields)), {}
    for col, (field, options) in zip(cols, fields.items()):
        default = {"w_terms": min(base.w_terms + 1, 4), "a_terms": min(base.a_terms + 1, 4)}.get(field, getattr(base, field))
        st.session_state.setdefault(f"lm_cmp_{field}", default if default in options else list(options)[0])
        values[field] = col.selectbox(f"B: {field.replace('_', ' ')}", list(options), key=f"lm_cmp_{field}")
    try:
        cfg_b = base.replace(**values)
    except ValueError as e:
        st.error(f"Configuration B is invalid: {e}")
        return
    st.caption(f"A = {base.label()} · B = {cfg_b.label()}")
    res = run_block("compare_lm", ctx, lambda: (ui_lm.metrics(ctx.mref, ctx.cfg_json, ctx.dref),
                                                ui_lm.metrics(ctx.mref, cfg_b.to_json(), ctx.dref)),
                    extra=cfg_b.to_json(), label="Compare")
    if res is None:
        return
    a, b = res
    table = metrics_table({f"A: {a['label']}": a, f"B: {b['label']}": b})
    table["B - A"] = table.iloc[:, 1] - table.iloc[:, 0]
    st.dataframe(table, width="stretch")
    st.caption(f"Both on {a['data']}; the FP reference is the same run for both.")


# ----- Export -----------------------------------------------------------------------------------------
@st.cache_resource(max_entries=1, show_spinner="Expanding and serializing…")
def _export_bytes(mref: ModelRef, cfg_json: str) -> tuple[bytes, str]:
    from ..export import save_expanded

    lm = ui_lm.load(*ui_lm._key(mref))
    q = expand(lm.model, L.lm_config(ExpansionConfig.from_json(cfg_json)), device=mref.device)
    return save_expanded(q, mref.name, weights_source=lm.source)


def export_page(ctx, run_block) -> None:
    """The expanded language model (safetensors + JSON), its metrics (CSV) and the session's figures (HTML)."""
    from ..reports import build_report

    res = run_block("export_lm", ctx, lambda: (_export_bytes(ctx.mref, ctx.cfg_json),
                                               ui_lm.metrics(ctx.mref, ctx.cfg_json, ctx.dref)), label="Prepare files")
    table = None
    if res is not None:
        (blob, meta), m = res
        stem = f"{ctx.model_name.replace('/', '_').replace(':', '_')}_{m['label'].replace(' ', '_')}"
        table = metrics_table({m["label"]: m})
        c1, c2, c3 = st.columns(3)
        c1.download_button("Expanded model (.safetensors)", blob, file_name=f"{stem}.safetensors",
                           mime="application/octet-stream", key="lm_dl_model", width="stretch")
        c2.download_button("Its config (.json)", meta, file_name=f"{stem}.json", mime="application/json",
                           key="lm_dl_config", width="stretch")
        c3.download_button("Metrics (.csv)", table.to_csv().encode(), file_name=f"{stem}_metrics.csv",
                           mime="text/csv", key="lm_dl_metrics", width="stretch")
        st.caption(f"Model file: {len(blob) / 2**20:.1f} MB (integer terms and scales of every Linear layer; "
                   "embeddings and norms are not stored: `load_expanded` takes them from the FP model).")
        st.dataframe(table, width="stretch")
    st.subheader("HTML report")
    figures = st.session_state.get("_figures", {})
    if not figures:
        st.info("No figures yet: open Accuracy recovery, Convergence or Layer residuals and they are collected here.")
        return
    picked = st.multiselect("Figures to include", list(figures), default=list(figures), key="lm_report_figs")
    page = build_report(f"fpxint report: {ctx.model_name}", {k: figures[k] for k in picked},
                        {"Metrics": table} if table is not None else {},
                        ctx.cfg.to_json(indent=2) if ctx.cfg else None, subtitle=ctx.describe())
    st.download_button("HTML report (self-contained)", page.encode(), file_name="fpxint_report.html",
                       mime="text/html", key="lm_dl_report", type="primary")


# ----- Convergence -----------------------------------------------------------------------------------
@st.cache_data(max_entries=8, show_spinner=False)
def _convergence(mref: ModelRef, cfg_json: str, dref: TextRef, bits: tuple[int, ...], max_terms: int, tokens: int):
    lm, x = ui_lm.load(*ui_lm._key(mref)), ui_lm.data_of(mref, dref).probe(tokens)
    cfg = L.lm_config(ExpansionConfig.from_json(cfg_json))
    bar, wdf, odf = st.progress(0.0), [], []
    for i, b in enumerate(bits):
        cb = cfg.replace(w_bits=b, a_bits=b)
        bar.progress(i / len(bits), text=f"{b}-bit weight residuals")
        wdf.append(analysis.weight_residuals(lm.model, cb, terms=max_terms).assign(bits=b))
        bar.progress((i + 0.5) / len(bits), text=f"{b}-bit model output, 1..{max_terms} terms")
        odf.append(analysis.model_output_error(lm.model, cb, x, terms=range(1, max_terms + 1), device=mref.device)
                   .assign(bits=b))
    bar.empty()
    return pd.concat(wdf, ignore_index=True), pd.concat(odf, ignore_index=True)


def convergence_page(ctx, run_block) -> None:
    """The weight series of every Linear layer against its proven bound, and the logits' error by terms."""
    c1, c2, c3 = st.columns([3, 1, 1])
    bits = tuple(sorted(c1.multiselect("Bit widths", list(range(2, 9)), default=[4, 8], key="lm_conv_bits")))
    max_terms = c2.number_input("Up to terms", 1, 4, value=3, key="lm_conv_terms")
    tokens = c3.segmented_control("Probe tokens", [32, 64, 128], default=64, key="lm_conv_tokens", required=True)
    if not bits:
        st.error("Choose at least one bit width.")
        return
    res = run_block("convergence_lm", ctx, lambda: _convergence(ctx.mref, ctx.cfg_json, ctx.dref, bits, max_terms,
                                                                int(tokens)), extra=f"{bits}|{max_terms}|{tokens}")
    if res is None:
        return
    wdf, odf = res
    chart(plots.weight_convergence(wdf), "lm_convergence_weights")
    chart(plots.output_convergence(odf, "rel_l2"), "lm_convergence_output")
    ok = (wdf["max_abs"] <= wdf["bound"] * (1 + 1e-6) + 1e-12).all()
    (st.success if ok else st.warning)(
        f"Every measured weight residual of the {wdf.layer.nunique()} Linear layers is within its proven bound."
        if ok else "Some residuals exceed the max-rule bound: expected with the mse/fixed scale rule or the full grid.")
    st.caption(f"Output: relative L2 error of the next-token logits on the first {tokens} tokens of the first window.")


# ----- Basis models -------------------------------------------------------------------------------------
def basis_page(ctx, run_block) -> None:
    """The integer terms of one Linear layer, and (models under 50 M parameters) the AbelianAdd check."""
    if ctx.loaded is None or ctx.cfg is None:
        return
    model = ctx.loaded.model
    layers = expandable_layers(model)
    names = [n for n, _ in layers]
    layer_name = st.selectbox("Layer", names, key="lm_basis_layer",
                              format_func=lambda n: f"{n} ({L.layer_kind(n)}, block {L.layer_block(n)})")
    idx = names.index(layer_name)
    cfg = L.lm_config(ctx.cfg)
    spec = cfg.layer_spec(layer_name, "first" if idx == 0 else "last" if idx == len(names) - 1 else None)
    if spec.fp:
        st.info(f"{layer_name} stays in FP under the first / last policy '{cfg.first_last}'.")
    else:
        t = views.layer_terms(expand_layer(layers[idx][1], cfg, spec))  # this layer only: no whole-model expansion
        st.caption(f"{layer_name}: weight {t['shape']}, {len(t['q'])} terms of {t['bits']} bits "
                   "(maps show at most 256 output channels x 512 inputs).")
        chart(plots.term_histograms(t["q"], t["bits"]), "lm_basis_histograms")
        chart(plots.term_heatmaps([q.reshape(q.shape[0], -1)[:256, :512] for q in t["q"]], t["bits"]),
               "lm_basis_heatmaps")
    st.subheader("AbelianAdd: any order gives the same network")
    params = sum(p.numel() for p in model.parameters())
    if params > BASIS_DEMO_MAX_PARAMS:
        st.info(f"The AbelianAdd check holds all {ctx.cfg.w_terms * ctx.cfg.a_terms} basis networks of "
                f"{ctx.model_name} ({params / 1e6:.0f} M parameters each) in memory at once; it runs here on models "
                "under 50 M parameters (all-MiniLM-L6-v2, the image models).")
        return
    seed = st.number_input("Shuffle seed (0: natural order)", 0, 10_000, value=7, key="lm_basis_seed")
    res = run_block("basis_lm", ctx, lambda: _basis_demo(ctx.mref, ctx.cfg_json, ctx.dref, int(seed)), extra=str(seed),
                    label="Sum the basis models")
    if res is not None:
        st.caption("Order: " + " ⊕ ".join(f"({i},{j})" for i, j in res["order"]))
        chart(plots.difference_bars(res["rows"]), "lm_basis_differences")


@st.cache_data(max_entries=4, show_spinner="Summing the basis models…")
def _basis_demo(mref: ModelRef, cfg_json: str, dref: TextRef, seed: int) -> dict:
    lm = ui_lm.load(*ui_lm._key(mref))
    q = expand(lm.model, L.lm_config(ExpansionConfig.from_json(cfg_json)), device=mref.device)
    return views.basis_demo(q, ui_lm.data_of(mref, dref).probe(32).to(mref.device), seed)


# ----- Allocate terms ---------------------------------------------------------------------------------
@st.cache_data(max_entries=4, show_spinner=False)
def _allocate(mref: ModelRef, cfg_json: str, dref: TextRef, gemms: float, max_terms: int, calib_tokens: int,
              mode: str) -> dict:
    lm, data = ui_lm.load(*ui_lm._key(mref)), ui_lm.data_of(mref, dref)
    calib = L.LMData(windows=token_windows(lm.tokenizer, find_shared() / WIKITEXT, calib_tokens, 1,
                                           start=data.windows.end))
    bar = st.progress(0.0, text="sensitivity")
    a = L.allocate_lm(lm.model, ExpansionConfig.from_json(cfg_json), f"gemms={gemms}x", calib, max_terms=max_terms,
                      mode=mode, device=mref.device, progress=lambda f, t: bar.progress(min(f, 1.0), text=f"sensitivity: {t}"))
    bar.empty()
    layers = a.layers.assign(kind=a.layers.layer.map(L.layer_kind), block=a.layers.layer.map(L.layer_block))
    return {"config": a.config.to_json(), "layers": layers, "solver": a.solver,
            "calibration": calib.describe() + " (after the scored windows)" if mode != "weights" else a.data,
            "int_gemms": a.cost["int_gemms"], "uniform_int_gemms": a.uniform_cost["int_gemms"],
            "predicted_sqnr_db": a.predicted_sqnr_db, "calib_sqnr_db": a.measured_sqnr_db}


def allocate_page(ctx, run_block) -> None:
    """Per-layer terms under a GEMM budget, calibrated on windows after the scored ones, scored on the sidebar's."""
    if ctx.loaded is not None and ctx.loaded.spec.task != "causal_lm":
        st.info(ENCODER_ALLOCATE)
        return
    c1, c2, c3, c4 = st.columns(4)
    mode = c4.selectbox("Sensitivity from", ["unlabeled", "weights"], key="lm_alloc_mode",
                        format_func={"unlabeled": "the logits (measured)", "weights": "the weights (no forward pass)"}.get)
    gemms = c1.number_input("Integer GEMMs (x uniform)", 0.1, 1.0, value=0.75, step=0.05, key="lm_alloc_gemms")
    max_terms = c2.number_input("Largest terms per side", 1, 4, value=min(max(ctx.cfg.w_terms, ctx.cfg.a_terms), 4)
                                if ctx.cfg else 2, key="lm_alloc_max_terms")
    calib_tokens = c3.segmented_control("Calibration tokens", [32, 64, 128], default=64, key="lm_alloc_tokens",
                                        required=True)
    n = len(expandable_layers(ctx.loaded.model)) if ctx.loaded is not None else 0
    st.caption(f"Measured on the logits, the sensitivity pass runs the model {2 * max_terms * n:,} times (every "
               f"layer, both sides, 1..{max_terms} terms) on one calibration window, each time from the layer's "
               "block on (the blocks before it replay the FP pass: on average half the blocks). From the weights "
               "it runs none, but its Gaussian stand-in input has none of the activation outliers that make LMs hard.")
    res = run_block("allocate_lm", ctx, lambda: _allocate(ctx.mref, ctx.cfg_json, ctx.dref, float(gemms),
                                                          int(max_terms), int(calib_tokens), mode),
                    extra=f"{gemms}|{max_terms}|{calib_tokens}|{mode}", label="Allocate")
    if res is None:
        return
    measured = "" if res["calib_sqnr_db"] is None else f", measured {res['calib_sqnr_db']:.1f} dB"
    st.markdown(f"Calibration: {res['calibration']}. Integer GEMMs per token: **{res['int_gemms']}** vs uniform "
                f"{res['uniform_int_gemms']}; SQNR of the logits: predicted {res['predicted_sqnr_db']:.1f} dB{measured} "
                f"(winner: {res['solver']}).")
    by_kind = res["layers"].groupby("kind", sort=False)[["w_terms", "a_terms"]].mean()
    st.dataframe(by_kind.rename(columns={"w_terms": "mean weight terms", "a_terms": "mean activation terms"}),
                 width="stretch")
    if st.button("Score the allocation on the sidebar's text", key="lm_alloc_score"):
        r = ui_lm.metrics(ctx.mref, res["config"], ctx.dref)
        u = ui_lm.metrics(ctx.mref, ctx.cfg_json, ctx.dref)
        st.dataframe(metrics_table({"allocated": r, f"uniform {u['label']}": u}), width="stretch")
    st.download_button("Allocated config (.json)", res["config"].encode(), file_name="lm_allocation.json",
                       mime="application/json", key="lm_alloc_json")


PAGES = {"Accuracy recovery": accuracy_page, "Compare": compare_page, "Export": export_page,
         "Convergence": convergence_page, "Basis models": basis_page, "Allocate terms": allocate_page}
