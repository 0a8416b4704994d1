"""Export: the expanded model (safetensors + JSON config), the metrics (CSV) and an HTML report."""
import streamlit as st

from fpxint import app as ui
from fpxint.reports import build_report

ctx = ui.header("Export", "Download the expanded model (integer terms and scales as safetensors, the config as "
                "JSON; reload with `fpxint.export.load_expanded`), its metrics, and a self-contained HTML report "
                "of the figures drawn in this session.")
res = ui.run_block("export", ctx, lambda: (ui.export_bytes(ctx.mref, ctx.cfg_json),
                                           ui.expansion_metrics(ctx.mref, ctx.cfg_json, ctx.dref)),
                   auto=ctx.cheap, label="Prepare files")
if res is not None:
    (blob, meta), metrics = res
    stem = f"{ctx.model_name}_{metrics['label'].replace(' ', '_')}"
    table = ui.metrics_table({metrics["label"]: metrics})
    c1, c2, c3 = st.columns(3)
    c1.download_button("Expanded model (.safetensors)", blob, file_name=f"{stem}.safetensors",
                       mime="application/octet-stream", key="dl_model", width="stretch")
    c2.download_button("Its config (.json)", meta, file_name=f"{stem}.json", mime="application/json",
                       key="dl_config", width="stretch")
    c3.download_button("Metrics (.csv)", table.to_csv().encode(), file_name=f"{stem}_metrics.csv", mime="text/csv",
                       key="dl_metrics", width="stretch")
    st.caption(f"Model file: {len(blob) / 2**20:.2f} MB.")
    ui.table(table)

st.subheader("HTML report")
figures = st.session_state.get("_figures", {})
if not figures:
    st.info("No figures yet: open the other pages (Layer residuals, Convergence, ...) and they will be collected here.")
else:
    picked = st.multiselect("Figures to include", list(figures), default=list(figures), key="report_figs")
    tables = {"Metrics": ui.metrics_table({res[1]["label"]: res[1]})} if res is not None else {}
    page = build_report(f"fpxint report: {ctx.model_name}", {k: figures[k] for k in picked}, tables,
                        ctx.cfg.to_json(indent=2) if ctx.cfg else None, subtitle=ctx.describe())
    st.download_button("HTML report (self-contained)", page.encode(), file_name="fpxint_report.html",
                       mime="text/html", key="dl_report", type="primary")
    st.caption(f"{len(picked)} figures, {len(page) / 2**20:.1f} MB (plotly.js embedded once; opens offline).")
