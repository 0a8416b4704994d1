"""Convergence: error vs number of terms for several bit widths, per layer and at the model output."""
import streamlit as st

from fpxint import plots
from fpxint import app as ui

ctx = ui.header("Convergence", "The residual series converges geometrically: with *b*-bit terms and the max rule, "
                "each term shrinks the max-abs weight residual by about 1/(2^b - 2). Dashed: the proven bound; "
                "solid: measured. Activation bits follow the weight bits here.")
c1, c2 = st.columns([3, 1])
bits = c1.multiselect("Bit widths", list(range(1, 9)), default=[2, 3, 4], key="conv_bits")
max_terms = c2.number_input("Up to terms", 1, 8, value=4, key="conv_terms")
bits_t = ui.chosen_bits(bits)
res = ui.run_block("convergence", ctx, lambda: ui.convergence(ctx.mref, ctx.cfg_json, ctx.dref, bits_t, max_terms),
                   extra=f"{bits_t}|{max_terms}", work=ui.sweep_work(ctx, bits_t, max_terms, probe=True))

if res is not None:
    wdf, odf = res
    layers = ["(worst layer)"] + wdf.drop_duplicates("layer").sort_values("index")["layer"].tolist()
    layer = st.selectbox("Layer", layers, key="conv_layer")
    ui.chart(plots.weight_convergence(wdf, None if layer == "(worst layer)" else layer), "convergence_weights")
    metric = st.segmented_control("Output measure", ["rel_l2", "sqnr_db"], default="rel_l2", key="conv_metric",
                                  required=True, format_func={"rel_l2": "relative error", "sqnr_db": "SQNR (dB)"}.get)
    ui.chart(plots.output_convergence(odf, metric), "convergence_output")
    ok = (wdf["max_abs"] <= wdf["bound"] * (1 + 1e-6) + 1e-12).all()
    (st.success if ok else st.warning)(
        "Every measured weight residual is within its proven bound." if ok else
        "Some residuals exceed the max-rule bound: expected with the mse/fixed scale rule or the full/asymmetric grid.")
    with st.expander("Tables"):
        st.dataframe(odf, hide_index=True, width="stretch")
        st.download_button("Download weight residuals (CSV)", wdf.to_csv(index=False).encode(),
                           file_name="convergence_weights.csv", mime="text/csv", key="conv_csv")
