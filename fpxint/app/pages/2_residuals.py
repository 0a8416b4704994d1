"""Layer residuals: per-layer x term error in weight space or output space; worst layers highlighted."""
import streamlit as st

from fpxint import plots
from fpxint import app as ui

ctx = ui.header("Layer residuals", "How much of each layer the first *k* terms leave over: in **weight space** "
                "(the residual of the weight series, beside its proven bound) or in **output space** (each layer's "
                "output against the FP model's on a probe batch, both run end to end).", language_models=True)
if ui.ui_lm.is_language_model(ctx.model_name):
    ui.ui_lm.residuals_page(ctx, ui.run_block)
    st.stop()
c1, c2 = st.columns(2)
space = c1.segmented_control("Space", ["weight", "output"], default="weight", key="res_space", required=True,
                             format_func={"weight": "weight space", "output": "output space (probe batch)"}.get)
metric = c2.segmented_control("Error measure", ["rel_l2", "sqnr_db"], default="rel_l2", key="res_metric", required=True,
                              format_func={"rel_l2": "relative error", "sqnr_db": "SQNR (dB)"}.get)
df = ui.run_block(f"residuals_{space}", ctx, lambda: ui.residuals(ctx.mref, ctx.cfg_json, ctx.dref, space),
                  extra=space, auto=ctx.cheap, work={"images": ui.probe_size(ctx) if space == "output" else 0})

if df is not None:
    term_col = "term" if space == "weight" else "terms"
    worst = plots.worst_layers(df, metric, term_col)
    st.markdown(f"Worst layers after all terms: **{', '.join(worst)}** (marked ⚠ and outlined).")
    ui.chart(plots.residual_heatmap(df, metric, space, worst), f"residual_heatmap_{space}")
    ui.chart(plots.residual_bars(df, metric, space, worst), f"residual_bars_{space}")
    layers = df.drop_duplicates("layer").sort_values("index")["layer"].tolist()
    layer = st.selectbox("Layer detail", layers, index=layers.index(worst[0]), key=f"res_layer_{space}")
    ui.chart(plots.layer_detail(df, layer, metric, space), "residual_layer_detail")
    st.dataframe(df[df["layer"] == layer], hide_index=True, width="stretch")
    st.download_button("Download the table (CSV)", df.to_csv(index=False).encode(), file_name=f"residuals_{space}.csv",
                       mime="text/csv", key="res_csv")
