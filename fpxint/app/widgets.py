"""The pages' building blocks: the header, the Run / Stop block that keeps results in the session, progress
bars, charts and tables. They keep the pages thin: a page reads its inputs, calls one cached result
(fpxint.app.results) through `run_block`, and renders it with these.

Progress bars live inside the cached functions on purpose: Streamlit replays elements created
inside a cached function on a cache hit, while an element created outside it would break replay.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import pandas as pd
import streamlit as st

from .. import admission, views
from . import lm as ui_lm, lm_pages
from .charts import chart  # noqa: F401 - pages call ui.chart
from .admit import _admitted
from .context import Context, context
from .loaders import _first_line


def chosen_bits(bits) -> tuple[int, ...]:
    """The sorted bit widths of a multiselect; stops the page with a message when none is chosen."""
    bits_t = tuple(sorted(bits))
    if not bits_t:
        st.error("Choose at least one bit width.")
        st.stop()
    return bits_t


def header(title: str, intro: str = "", *, language_models: bool = False) -> Context:
    """Page title, what is loaded, and every sidebar error (the page keeps its previous results).

    A page that does not handle language models itself (`language_models=False`) renders its language-model
    version here (`ui_lm.page`) and stops when one is chosen.
    """
    ctx = context()
    st.title(title)
    lm_version = not language_models and ui_lm.is_language_model(ctx.model_name)
    if intro and not lm_version:
        st.markdown(intro)
    st.caption(ctx.describe())
    for err in ctx.errors:
        st.error(err)
    if lm_version:  # this page's language-model version (app/lm_pages.py), then the page file stops
        lm_pages.page(ctx, title, run_block)
        st.stop()
    return ctx


def run_block(name: str, ctx: Context, compute: Callable[[], Any], extra: str = "", *, auto: bool = False,
              label: str = "Run", work: dict | None = None, first: tuple[Callable[[], Any], str] | None = None) -> Any:
    """Run / Stop buttons, then the newest successful result of this block (None before the first).

    `compute` is a call into a cached function; the result is kept in the session with its key
    (model + config + data + `extra`). Going back to a configuration already computed costs nothing
    and needs no click. An invalid configuration, an error or a Stop keeps the previous result.
    A new run is first estimated (`estimate(ctx, **work)`: the heaviest config, passes, images) and
    refused over the server's limits, then waits its turn in the server-wide queue.

    `first` = (compute on less data, what to say about it): until this block has a result, a first result is
    computed without a click (once per session, through the same limits and queue) and shown with that note.
    """
    key = f"{ctx.mref}|{ctx.cfg_json}|{ctx.dref}|{extra}" if ctx.ready else None
    slot, done = f"_result_{name}", st.session_state.setdefault("_done", set())
    row = st.container(horizontal=True, vertical_alignment="center")
    clicked = row.button(label, type="primary", key=f"run_{name}", disabled=key is None)
    stopped = row.button("Stop", key=f"stop_{name}", help="Interrupts a running computation; results on screen stay.")
    c3 = row.empty()
    if stopped:
        st.info("Stopped. The results below are from the last completed run.")
    elif key is not None and (clicked or key in done or (auto and slot not in st.session_state)):
        try:
            t0 = time.perf_counter()
            result = compute() if key in done and not clicked else _admitted(ctx, compute, work or {})
            st.session_state[slot] = (key, ctx.describe(), result, time.perf_counter() - t0)
            done.add(key)
        except admission.AdmissionError as e:
            st.error(f"{label} refused: {e}", icon=":material/block:")
        except Exception as e:  # noqa: BLE001 - any engine failure becomes a message, never a traceback
            st.error(f"{label} failed: {_first_line(e)}. The results below (if any) are from the last successful run.")
    stored = st.session_state.get(slot)
    if stored is None:
        got = _first_result(name, ctx, key, first) if first is not None and key is not None and not stopped else None
        if got is None:
            c3.caption("Press Run to compute with the sidebar's configuration.")
        return got
    if stored[0] != key:
        st.warning(f"Showing earlier results ({stored[1]}). Press **{label}** for the current settings.")
    else:
        c3.caption(f"Shown: the current settings (computed or cached; last call {stored[3]:.2f} s).")
    return stored[2]


def _first_result(name: str, ctx: Context, key: str, first: tuple[Callable[[], Any], str]) -> Any:
    """run_block's automatic first result: computed on the block's first showing in a session (a cached call,
    so a later session with the same settings gets it at once), shown while the settings are unchanged."""
    compute, note = first
    slot = f"_first_{name}"
    if slot not in st.session_state:
        st.session_state[slot] = (key, None)  # once per session, even when it fails
        try:
            st.session_state[slot] = (key, _admitted(ctx, compute, {}))
        except admission.AdmissionError as e:
            st.error(f"First result refused: {e}", icon=":material/block:")
        except Exception as e:  # noqa: BLE001 - as run_block: a message, never a traceback
            st.error(f"First result failed: {_first_line(e)}.")
    seen_key, result = st.session_state[slot]
    if seen_key != key or result is None:
        return None
    st.info(note, icon=":material/bolt:")
    return result


class _Progress:
    """A progress bar created inside a cached function (so cache hits replay it without errors).

    Called as f(fraction, text) by fpxint.views (which maps its stages onto [0, 1]); each update is
    also where Streamlit can stop the run.
    """

    def __init__(self, what: str):
        self.slot, self.what, self.last = st.empty(), what, -1.0

    def __call__(self, fraction: float, text: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if fraction - self.last >= 0.02 or fraction >= 1.0:  # fewer messages to replay
            self.last = fraction
            self.slot.progress(fraction, text=f"{self.what}: {text}" if text else self.what)

    def done(self) -> None:
        self.slot.empty()


def table(df: pd.DataFrame, **kw) -> None:
    """A dataframe tall enough to show every row (tables here are short)."""
    styled = df.style.format(lambda v: f"{v:.4g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else v)
    st.dataframe(styled, height=35 * (len(df) + 1) + 3, width="stretch", **kw)


metrics_table = views.metrics_table  # pages call ui.metrics_table beside ui.table
