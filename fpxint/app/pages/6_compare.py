"""Compare: the sidebar's configuration (A) against a second one edited here (B), side by side."""
import streamlit as st

from fpxint import ExpansionConfig, config as C, plots
from fpxint import app as ui

ctx = ui.header("Compare", "**A** is the sidebar's configuration; **B** starts as a copy and is edited here. "
                "Both run on the same model and images.")
base = ctx.cfg or ExpansionConfig()
FIELDS = {"w_bits": range(1, 9), "w_terms": range(1, 9), "a_bits": range(1, 9), "a_terms": range(1, 9),
          "level": C.LEVELS, "truncation": C.TRUNCATIONS, "scale_rule": C.SCALE_RULES, "w_grid": C.GRIDS,
          "a_grid": C.GRIDS, "first_last": C.FIRST_LAST, "mode": C.MODES}
DEFAULT_B = {"w_terms": min(base.w_terms + 1, 8), "a_terms": min(base.a_terms + 1, 8)}
cols = st.columns(6)
values = {}
for n, (field, options) in enumerate(FIELDS.items()):
    st.session_state.setdefault(f"cmp_{field}", DEFAULT_B.get(field, getattr(base, field)))
    values[field] = cols[n % 6].selectbox(f"B: {field.replace('_', ' ')}", list(options), key=f"cmp_{field}")
try:
    cfg_b = base.replace(**values)
    st.caption(f"A = {base.label()} · B = {cfg_b.label()}")
except ValueError as e:
    cfg_b = None
    st.error(f"Configuration B is invalid: {e}")

ready = cfg_b is not None
res = ui.run_block("compare", ctx if ready else ui.Context(ctx.model_name),
                   lambda: ui.compare(ctx.mref, ctx.cfg_json, cfg_b.to_json(), ctx.dref),
                   extra=cfg_b.to_json() if ready else "", label="Compare",
                   work={"cfg": max(base, cfg_b, key=lambda c: c.w_terms * c.a_terms), "passes": 2} if ready else {})
if res is not None:
    a, b = res["A"], res["B"]
    names = {f"A: {a['label']}": a["metrics"], f"B: {b['label']}": b["metrics"]}
    table = ui.metrics_table(names)
    table["B - A"] = table.iloc[:, 1] - table.iloc[:, 0]
    ui.table(table)
    ui.chart(plots.compare_output_curves({f"A: {a['label']}": a["curve"], f"B: {b['label']}": b["curve"]}),
             "compare_output")
    ui.chart(plots.compare_layer_bars({f"A: {a['label']}": a["weights"], f"B: {b['label']}": b["weights"]}),
             "compare_layers")
