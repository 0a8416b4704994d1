"""Expand: run the expansion with the sidebar's configuration; headline accuracy and cost."""
import streamlit as st

from fpxint import app as ui

ctx = ui.header("Expand", "Expand the model into a sum of low-bit integer networks and measure what it costs "
                "and what it keeps. The built-in model computes on load; other models start from **Run**.",
                language_models=True)
if ui.ui_lm.is_language_model(ctx.model_name):
    ui.ui_lm.expand_page(ctx, ui.run_block)
    st.stop()
r = ui.run_block("expand", ctx, lambda: ui.expansion_metrics(ctx.mref, ctx.cfg_json, ctx.dref), auto=ctx.cheap)

if r is not None:
    c = r["cost"]
    cols = st.columns(4)
    if r["labeled"] and r["trained"]:
        cols[0].metric("FP top-1", f"{r['fp_top1']:.2f} %", help="The full-precision model on the same images.")
        delta = r["top1"] - r["fp_top1"]
        cols[1].metric(f"Expanded top-1 ({r['label']})", f"{r['top1']:.2f} %", delta=f"{delta:+.2f} pt vs FP",
                       delta_color="normal" if abs(delta) >= 0.005 else "off")
    else:
        why = "untrained model" if not r["trained"] else "unlabeled images"
        cols[0].metric("Agreement with FP (top-1)", f"{r['agreement']:.2f} %", help=f"Fidelity, not accuracy: {why}.")
        cols[1].metric("KL(FP ‖ expanded)", f"{r['kl']:.3g}", help="Mean KL divergence of the softmax outputs (nats).")
    cols[2].metric("Effective bits / weight", f"{c['effective_bits']:.2f}",
                   help="Bits of all weight terms plus their float32 scales, per weight.")
    cols[3].metric("Integer GEMMs / forward", f"{c['int_gemms']}", help="One exact integer GEMM / conv per kept cross term.")
    cols = st.columns(4)
    cols[0].metric("Weight memory vs FP", f"{100 * c['memory_vs_fp']:.1f} %",
                   help=f"{c['weight_mb']:.3f} MB vs {c['fp_weight_mb']:.3f} MB (FP32)")
    cols[1].metric("BOPs vs FP", f"{100 * c['bops_vs_fp']:.2f} %", help=f"{c['bops']:.3g} bit-operations per image")
    cols[2].metric("Time taken", f"{r['seconds']:.2f} s", help=f"Expand + evaluate {r['n_images']} images "
                   f"(the FP pass took {r['fp_seconds']:.2f} s).")
    if r["labeled"] and r["trained"]:
        cols[3].metric("Agreement with FP", f"{r['agreement']:.2f} %", help=f"KL(FP ‖ expanded) = {r['kl']:.3g}")
    else:
        cols[3].metric("Images", f"{r['n_images']}")
    it = r.get("integer_timing") or {}
    if "int_ms" in it:
        st.caption(f"Integer mode ({it['kernel']}), one batch of {it['batch']}: **integer {it['int_ms']:.0f} ms, "
                   f"FP {it['fp_ms']:.0f} ms**, " + ("exact (int8 accumulators = float64 reference on "
                   f"`{it['layer']}`)" if it["exact"] else "NOT exact: int8 and float64 accumulators differ"))
    elif it:
        st.caption(f"Integer mode: {it['reason']}")
    if not r["trained"]:
        st.info(ctx.accuracy_off or "Untrained model: fidelity only.")
    st.caption(f"Equal-budget reference: one term of {c['equal_budget_w_bits']} weight bits stores the same; "
               f"{c['expanded_layers']} of {c['layers']} layers expanded, {c['params']:,} weights.")
    # A toggle, not an expander: an expander renders its table anyway, and the table widget's 1.2 MB of
    # JavaScript would then delay the first result of every fresh browser (see docs/RESULTS.md, app latency).
    if st.toggle("All metrics as a table", key="expand_all_metrics"):
        ui.table(ui.metrics_table({r["label"]: r}))
