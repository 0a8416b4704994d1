"""The Explain page's Streamlit helpers (talk mode): its step in the URL, its parts computed once per
model + config and cached, and projector-styled charts with PNG / SVG downloads."""
from __future__ import annotations

from typing import Any

import streamlit as st

from .. import views
from ..config import ExpansionConfig
from .context import Context
from .loaders import DataRef, ModelRef, _first_line, images_of, model_of
from .widgets import _Progress


def page_step(n: int, key: str = "explain_step") -> int:
    """The page's step 1..n: from `?step=` when the URL changed it, else the session's; written back to the URL."""
    raw = st.query_params.get("step")
    if raw is not None and raw != st.session_state.get(f"_{key}_url"):
        if raw.isdigit() and 1 <= int(raw) <= n:
            st.session_state[key] = int(raw)
        else:
            st.warning(f"Ignored link setting step={raw!r} (an integer 1..{n}).")
    step = int(st.session_state.setdefault(key, 1))
    st.session_state[f"_{key}_url"] = st.query_params["step"] = str(step)
    return step


@st.cache_data(max_entries=64, show_spinner=False)
def _explain(mref: ModelRef, cfg_json: str, dref: DataRef | None, part: str, layer: str | None) -> Any:
    from .. import explain

    lm = model_of(mref)
    bar = _Progress(f"Explain ({part})")
    out = explain.compute(part, lm, images_of(dref) if dref else None, ExpansionConfig.from_json(cfg_json), mref.device,
                          layer, views.batch_size(lm.spec), bar)
    bar.done()
    return out


def explain_part(ctx: Context, part: str, layer: str | None = None) -> Any:
    """One part of the Explain page, computed once per model + config (+ data for the image steps) and cached,
    so that the page's sliders only index it; None (with the error shown) when it cannot be computed."""
    from ..explain import NEEDS_DATA

    if ctx.mref is None or ctx.cfg is None or (part in NEEDS_DATA and ctx.dref is None):
        return None
    try:
        return _explain(ctx.mref, ctx.cfg_json, ctx.dref if part in NEEDS_DATA else None, part, layer)
    except Exception as e:  # noqa: BLE001 - an engine error is a message, not a traceback
        st.error(f"Could not compute this step: {_first_line(e)}")
        return None


def slide_chart(fig, name: str) -> None:
    """A figure in its own projector style (Streamlit's theme off), downloadable from its toolbar as PNG (camera)
    and SVG (the button `slide_assets` adds), both made by plotly in the browser."""
    st.plotly_chart(fig, theme=None, key=f"chart_{name}", config={
        "displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": f"fpxint_{name}", "scale": 2}})
    st.session_state.setdefault("_figures", {})[name] = fig


def slide_assets() -> None:
    """The Explain page's projector CSS and the charts' SVG download button (fpxint/assets/explain.html)."""
    from importlib.resources import files

    st.html(files("fpxint").joinpath("assets/explain.html").read_text(), unsafe_allow_javascript=True)
