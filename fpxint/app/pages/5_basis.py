"""Basis models: the integer terms of a layer, and the Abelian sum of basis models in any order."""
import streamlit as st

from fpxint import plots
from fpxint import app as ui

ctx = ui.header("Basis models", "Basis model (i, j) is the network, isomorphic to the FP one, whose every layer "
                "holds weight term *i* and consumes input term *j*. Here: the integer terms of one layer, a "
                "live check that adding the basis models (AbelianAdd) in any order rebuilds the expanded model, "
                "and where the group laws hold on outputs (one layer) and where they do not (a deep network).")
layer = None
if ctx.ready:
    try:
        names = ui.expanded_layer_names(ctx.mref, ctx.cfg_json)
        layer = st.selectbox("Layer", names, key="basis_layer")
        t = ui.layer_terms(ctx.mref, ctx.cfg_json, layer)
    except Exception as e:  # noqa: BLE001 - an engine error is a message, not a traceback
        st.error(f"Could not expand the model: {e}")
    else:
        st.caption(f"{layer}: weight {t['shape']}, {len(t['q'])} terms of {t['bits']} bits "
                   "(maps show at most 256 output channels x 512 inputs).")
        ui.chart(plots.term_histograms(t["q"], t["bits"]), "basis_histograms")
        ui.chart(plots.term_heatmaps([q.reshape(q.shape[0], -1)[:256, :512] for q in t["q"]], t["bits"]),
                 "basis_heatmaps")
        ui.chart(plots.term_scales(t["scales"], t["bits"]), "basis_scales")

st.subheader("AbelianAdd: any order gives the same network")
c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
seed = c1.number_input("Shuffle seed (0: natural order)", 0, 10_000, value=7, key="basis_seed")
res = ui.run_block("basis", ctx, lambda: ui.basis_demo(ctx.mref, ctx.cfg_json, ctx.dref, seed, layer),
                   extra=f"{seed}|{layer}", auto=ctx.cheap, label="Sum the basis models", work={"images": 32, "passes": 16})
if res is not None:
    c2.caption("Order: " + " ⊕ ".join(f"({i},{j})" for i, j in res["order"]))
    rows = res["rows"]
    cols = st.columns(3)
    for col, (_, r) in zip(cols, rows.iterrows()):
        col.metric(r["method"], "0 (exact)" if r["max_abs_diff"] == 0 else f"{r['max_abs_diff']:.3g}",
                   help=f"max |Δ logits| over the probe batch; logits reach {res['scale']:.3g}")
    ui.chart(plots.difference_bars(rows), "basis_differences")
    st.markdown("AbelianAdd adds the basis models' integer accumulators **inside each layer, before the nonlinearity**, "
                "so any order gives the same network, bit for bit (simulate and integer mode compute the same exact "
                "accumulators). Running them as separate networks and adding outputs does not.")
    st.subheader("Which structure is a group")
    st.markdown(
        "The group is the **integer coefficient tables**: each layer's C (which cross terms enter, how often) under "
        "addition, with C = 0 as identity and −C as inverse. A network's output f(C) respects the group only where it "
        "is linear in C: **within one linear layer** every basis model's output is an exact integer accumulator "
        "times s_i t_j, so outputs add (float rounding of the rescale, ~1e-7). **Across layers** they cannot: each "
        "layer's activation terms are the run-time expansion of the *summed* upstream output (rounding is not "
        "additive), and the nonlinearity acts on that sum (relu(a + b) ≠ relu(a) + relu(b)). So a deep network's "
        "basis models must run in lockstep, summed at every layer.")
    if len(res["laws"]):
        ui.chart(plots.law_bars(res["laws"]), "basis_laws")
        st.caption("Relative gap ‖lhs − rhs‖ / ‖rhs‖ on the probe images, with the shared base f(0) (the biases "
                   "through the network) counted once on each side. A: weight term 1 with every input term; B: the "
                   "other weight terms. ⊖A negates A's coefficients.")
    else:
        st.caption("The group laws need at least two terms on one side: raise the sidebar's terms.")
