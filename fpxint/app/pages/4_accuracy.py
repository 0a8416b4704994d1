"""Accuracy recovery: top-1 vs number of terms for several bit widths against FP; equal-budget check."""
import streamlit as st

from fpxint import plots
from fpxint import app as ui

ctx = ui.header("Accuracy recovery", "Top-1 as terms are added, for several bit widths (weights and activations "
                "alike), against the FP model. One term is plain round-to-nearest (open diamonds). The x axis "
                "can show cost instead of terms: **n terms of b bits store n·b bits per weight**.")
if ctx.accuracy_off:
    st.warning(f"Accuracy recovery is off: {ctx.accuracy_off}")
    st.stop()
if ctx.data is not None and not ctx.labeled:
    st.info("Unlabeled images: the curves show top-1 agreement with the FP model (fidelity) instead of accuracy.")
c1, c2, c3 = st.columns([3, 1, 2])
bits = c1.multiselect("Bit widths", list(range(1, 9)), default=[2, 3, 4], key="acc_bits")
max_terms = c2.number_input("Up to terms", 1, 6, value=3, key="acc_terms")
x = c3.segmented_control("x axis", list(plots.X_AXES), default="terms", key="acc_x", required=True,
                         format_func={"terms": "terms", "bits_per_weight": "bits / weight", "bops": "BOPs"}.get)
bits_t = ui.chosen_bits(bits)
res = ui.run_block("accuracy", ctx, lambda: ui.accuracy(ctx.mref, ctx.cfg_json, ctx.dref, bits_t, max_terms),
                   extra=f"{bits_t}|{max_terms}", work=ui.sweep_work(ctx, bits_t, max_terms))

if res is not None:
    y = "top1" if res["labeled"] else "agreement"
    fp = res["fp_top1"] if res["labeled"] else 100.0
    ui.chart(plots.accuracy_recovery(res["grid"], fp, x, y), "accuracy_recovery")
    if len(res["budget"]):
        ui.chart(plots.equal_budget(res["budget"], fp, y), "equal_budget")
        st.caption("Equal budget: only pairs with n·b ≤ 8 (terms are stored as int8).")
    else:
        st.caption("No equal-budget pairs: they need n ≥ 2 terms of b bits with n·b ≤ 8.")
    table = res["grid"].drop(columns=["config"])
    st.dataframe(table, hide_index=True, width="stretch")
    st.download_button("Download the grid (CSV)", table.to_csv(index=False).encode(), file_name="accuracy_grid.csv",
                       mime="text/csv", key="acc_csv")
