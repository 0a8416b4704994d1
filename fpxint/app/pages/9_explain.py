"""Explain: the method in five screens for a talk, on the sidebar's model and config (← / → step through)."""
import streamlit as st

from fpxint import explain as ex, plots, plots_explain as pe
from fpxint import app as ui

N = len(ex.STEPS)
step = ui.page_step(N)
ctx = ui.header(f"{step}. {ex.STEPS[step - 1]}")
ui.slide_assets()


def _go(delta: int) -> None:
    st.session_state["explain_step"] = min(max(1, st.session_state["explain_step"] + delta), N)


def _keep(label: str, name: str, options: list, default, key: str):
    """A selectbox whose choice survives the steps that do not show it (Streamlit drops unrendered widgets' state)."""
    value = st.session_state.get(name, default)
    choice = st.selectbox(label, options, index=options.index(value if value in options else default), key=key)
    st.session_state[name] = choice
    return choice


def _terms(where, n: int, key: str) -> int:
    k = where.slider("Terms in the sum", 1, n, value=min(st.session_state.get("_explain_k", 1), n), key=key)
    st.session_state["_explain_k"] = k
    return k


nav = st.container(horizontal=True, vertical_alignment="center")
nav.button("◀ Previous", key="explain_prev", on_click=_go, args=(-1,), disabled=step == 1, shortcut="Left")
nav.segmented_control("Step", list(range(1, N + 1)), key="explain_step", required=True, label_visibility="collapsed",
                      format_func=lambda i: f"{i} · {ex.SHORT[i - 1]}")
nav.button("Next ▶", key="explain_next", on_click=_go, args=(1,), disabled=step == N, shortcut="Right",
           type="primary")

layers = ui.explain_part(ctx, "layers")
if layers is None:
    st.stop()
if not ctx.cheap and st.button("Prepare all five steps", key="explain_prepare",
                               help="Computes every step once (with progress) into the app's cache, so that the "
                                    "talk itself only reads it."):
    for part in ("tensor", "residuals", "layer", "model", "cost"):
        ui.explain_part(ctx, part, st.session_state.get("_explain_layer", layers[1]))


# Steps 1-3 are fragments: a slider or a choice there reruns only the step (no sidebar, no navigation), which
# keeps every move of the built-in model under 0.3 s (bench/app_latency.py, Explain part).
def _layer(step: int):
    c1, c2 = st.columns([2, 3])
    with c1:
        return _keep("Layer", "_explain_layer", layers[0], layers[1], f"explain_layer_{step}"), c2


@st.fragment
def tensor_step() -> None:
    layer, c2 = _layer(1)
    t = ui.explain_part(ctx, "tensor", layer)
    if t is not None:
        k = _terms(c2, len(t["terms"]), "explain_k1")
        st.markdown(f"W = s₁Q₁ + s₂Q₂ + … : each **{t['bits']}-bit** term rounds what the ones before it left over.")
        ui.slide_chart(pe.tensor_terms(t, k), "explain_tensor")


@st.fragment
def bound_step() -> None:
    layer, c2 = _layer(2)
    t, everyone = ui.explain_part(ctx, "tensor", layer), ui.explain_part(ctx, "residuals")
    if t is not None and everyone is not None:
        ratios = (t["norms"]["max_abs"] / t["norms"]["max_abs"].shift(1).fillna(float(abs(t["weight"]).max()))).tolist()
        c2.markdown(f"Max rule, {t['bits']}-bit {t['grid']} grid: **{t['contraction_text']}**.  \n"
                    f"After k terms, max |R_k| ≤ f^k · max |W|.")
        ui.slide_chart(pe.residual_vs_bound(everyone, t), "explain_bound")
        ok = bool((everyone["max_abs"] <= everyone["bound"] * (1 + 1e-6) + 1e-12).all())
        st.markdown(("Every layer stays within its proven bound. " if ok else
                     "Some residuals exceed the max-rule bound (expected with the mse / fixed scale rule). ")
                    + f"Measured factor per term here: {', '.join(f'{r:.3g}' for r in ratios[1:])}.")


@st.fragment
def layer_step() -> None:
    layer, c2 = _layer(3)
    s = ui.explain_part(ctx, "layer", layer)
    if s is not None:
        b1, b2 = c2.columns(2)
        names = [f"image {i + 1}" + (f" ({s['classes'][s['labels'][i]]})" if s["labels"] and s["classes"] else "")
                 for i in range(len(s["indices"]))]
        img = names.index(b1.selectbox("Input", names, key="explain_image"))
        k = _terms(b2, s["n"], "explain_k3")
        left, right = st.columns([5, 2])
        with left:
            ui.slide_chart(pe.layer_io(s["images"][img], s["fp"][img], s["expanded"][k - 1][img], k,
                                       f"input #{s['indices'][img]}"), "explain_layer")
        with right:  # without the k marker: the same figure for every k, so the browser keeps it drawn
            ui.slide_chart(pe.layer_errors(s["errors"], img), "explain_layer_error")


if step == 1:
    tensor_step()
elif step == 2:
    bound_step()
elif step == 3:
    layer_step()
elif step == 4:
    m = ui.explain_part(ctx, "model")
    if m is not None:
        y = "top1" if m["labeled"] and ctx.trained else "agreement"
        g = m["grid"]
        fp = m["fp_top1"] if y == "top1" else 100.0
        st.markdown(f"One term is plain round-to-nearest: **{g[y].iloc[0]:.2f} %**; {len(g)} terms: "
                    f"**{g[y].iloc[-1]:.2f} %**; FP: **{fp:.2f} %** ({'top-1' if y == 'top1' else 'agreement with FP'}"
                    f" on {ctx.data.source.split(':')[0] if ctx.data else 'the images'}).")
        left, right = st.columns([6, 5])
        with left:
            fig = pe.slide(plots.accuracy_recovery(g, fp, "terms", y), "Top-1 against terms" if y == "top1"
                           else "Agreement with FP against terms", 440)
            ui.slide_chart(fig.update_layout(legend={"orientation": "h", "y": -0.22, "x": 0}), "explain_accuracy")
        with right:
            if m["flips"]:
                ui.slide_chart(pe.flips(m["flips"], ctx.data.classes if ctx.data else None), "explain_flips")
            else:
                st.info("No image here changes its prediction back to FP's as terms are added.")

elif step == 5:
    m, c = ui.explain_part(ctx, "model"), ui.explain_part(ctx, "cost")
    if m is not None and c is not None:
        st.markdown(ex.budget_sentence(m, ctx.cfg))
        left, right = st.columns([3, 2])
        with left:
            ui.slide_chart(pe.cost_bars(c, ctx.cfg.w_bits), "explain_cost")
        if len(m["budget"]):
            y = "top1" if m["labeled"] and ctx.trained else "agreement"
            with right:
                ui.slide_chart(pe.equal_budget(m["budget"], m["fp_top1"] if y == "top1" else 100.0, y), "explain_budget")
