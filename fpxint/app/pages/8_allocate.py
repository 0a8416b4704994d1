"""Per-layer term allocation: spend terms where they matter, under a GEMM / BOP budget or an SQNR target."""
import pandas as pd
import streamlit as st

from fpxint import app as ui
from fpxint.allocation import plots as pa
from fpxint.allocation import MODES, Budget
from fpxint.config import ExpansionConfig

KINDS = {"int_gemms": "integer GEMMs (× uniform)", "bops": "BOPs (× uniform)", "sqnr_db": "output SQNR target (dB)"}

ctx = ui.header("Allocate terms", "Beyond the paper: instead of the same number of terms everywhere, each "
                "layer gets its own **weight** and **activation** term counts. The sidebar's config is the uniform "
                "reference. The sensitivity of each layer (model-output error with only that layer expanded) feeds "
                "an exact knapsack solver under the budget. The allocation is chosen on calibration images and "
                "accuracy is reported on the **other** images of the sidebar's set.")
if ctx.cfg is not None and not ctx.cfg.expands_activations:
    st.info("Activations stay in FP in this config: only weight terms are allocated (budget BOPs).")

c1, c2, c3, c4 = st.columns(4)
kind = c1.selectbox("Budget", list(KINDS), format_func=KINDS.get, key="alloc_kind")
value = c2.number_input("Value", 0.05, 200.0, value=30.0 if kind == "sqnr_db" else 0.75, step=0.05,
                        key=f"alloc_value_{kind}")
modes = [m for m in MODES if ctx.labeled or m != "labeled"]
mode = c3.selectbox("Calibration data", modes, index=len(modes) - 1, key="alloc_mode",
                    help="weights: no forward pass · synthetic: Gaussian inputs · unlabeled / labeled: the "
                         "sidebar's images (the calibration subset only)")
n_calib = c4.number_input("Calibration images", 8, 2048, value=128, step=32, key="alloc_calib")
d1, d2 = st.columns(2)
max_terms = d1.number_input("Largest terms per side", 1, 8, value=5, key="alloc_max_terms")
solver = d2.selectbox("Solver", ["dp", "greedy"], key="alloc_solver",
                      help="dp: exact on the additive noise model · greedy: best error cut per unit cost")

budget = f"{kind}={value}{'x' if kind != 'sqnr_db' else ''}"
res = ui.run_block("allocate", ctx, lambda: ui.allocation(ctx.mref, ctx.cfg_json, ctx.dref, budget, mode, int(n_calib),
                                                         int(max_terms), solver),
                   extra=f"{budget}|{mode}|{n_calib}|{max_terms}|{solver}", label="Allocate",
                   work=ui.sweep_work(ctx, (ctx.cfg.w_bits,), int(max_terms)) if ctx.ready else {})
if res is not None:
    c, u, curve = res["cost"], res["uniform"], res["curve"]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Integer GEMMs", c["int_gemms"], f"{c['int_gemms'] - u['int_gemms']:+d} vs uniform",
              delta_color="inverse")
    m2.metric("BOPs vs uniform", f"{100 * c['bops'] / max(u['bops'], 1):.0f} %")
    alloc_row = curve[curve.kind == "allocated"].iloc[0]
    labeled = curve.top1.notna().any()
    if labeled:
        m3.metric("Top-1 (evaluation images)", f"{alloc_row.top1:.2f} %",
                  f"{alloc_row.top1 - alloc_row.fp_top1:+.2f} vs FP")
    else:
        m3.metric("Agreement with FP", f"{alloc_row.agreement:.1f} %")
    m4.metric("Output SQNR (evaluation)", f"{alloc_row.sqnr_db:.1f} dB", f"predicted {res['pred']:.1f} dB",
              delta_color="off")
    st.caption(f"Calibration: {res['data']} (stratified, seed 0). Evaluation: the other {res['n_eval']} images. "
               f"Budget: {Budget.parse(res['budget']).describe()}.")
    cfg = ExpansionConfig.from_json(res["config"])
    ui.chart(pa.term_map(res["layers"], (cfg.w_terms, cfg.a_terms)), "allocation_terms")
    x = st.segmented_control("Cost axis", ["int_gemms", "bops_vs_fp"], default="int_gemms", key="alloc_x",
                             required=True, format_func=pa.COST_TITLES.get)
    ui.chart(pa.cost_curve(curve, x, "top1" if labeled else "agreement"), "allocation_curve")
    with st.expander("Layer sensitivity and the candidates measured on the calibration images"):
        ui.chart(pa.sensitivity_heatmap(res["sens"]), "allocation_sensitivity")
        st.dataframe(res["candidates"], hide_index=True, width="stretch")
    st.dataframe(pd.DataFrame(res["layers"]), hide_index=True, width="stretch")
    st.dataframe(curve.drop(columns=["config"]), hide_index=True, width="stretch")
    b1, b2 = st.columns(2)
    b1.download_button("Download the allocated config (JSON)", res["config"], file_name="allocation.json",
                       mime="application/json", key="alloc_json")
    if b2.button("Use this allocation on every page", key="alloc_apply", type="primary"):
        st.session_state[ui.ALLOCATION_KEY] = res["config"]
    if st.session_state.get(ui.ALLOCATION_KEY) == res["config"]:
        b2.success("Applied: the other pages use this allocation's per-layer overrides.")
