"""The app's entry: its pages, its navigation, and the start-up warm-up.

Two scripts start the app and both call `run()`, so that one copy of the navigation, the sidebar and the
pages serves both: `app.py` in a checkout (`streamlit run app.py`) and `fpxint/app/script/fpxint_app.py`
in an installed package (`fpxint app`). Each also defines `app = st.App(script, lifespan=warm_at_start)`,
which `streamlit run` finds when it imports the script as a module.

The page scripts live in `fpxint/app/pages/` (package data: they travel with the package). The checkout's
top-level `pages/` holds one thin script per page that only calls `run()`: see `run` for why.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from pathlib import Path

import streamlit as st

from .sidebar import prewarm, prewarm_lm, sidebar

PAGE_DIR = Path(__file__).resolve().parent / "pages"
# (file in PAGE_DIR, title, icon, url_path). The url_path equals the name Streamlit derives from the file
# name (and from the checkout's pages/<url_path>.py), so that a link to a page is the same on every route.
PAGES = (
    ("1_expand.py", "Expand", ":material/play_arrow:", "expand"),
    ("2_residuals.py", "Layer residuals", ":material/grid_on:", "residuals"),
    ("3_convergence.py", "Convergence", ":material/trending_down:", "convergence"),
    ("4_accuracy.py", "Accuracy recovery", ":material/target:", "accuracy"),
    ("5_basis.py", "Basis models", ":material/functions:", "basis"),
    ("6_compare.py", "Compare", ":material/compare_arrows:", "compare"),
    ("7_export.py", "Export", ":material/download:", "export"),
    ("8_allocate.py", "Allocate terms", ":material/tune:", "allocate"),
    ("9_explain.py", "Explain (talk mode)", ":material/slideshow:", "explain"),
)


def run() -> None:
    """One run of the app for one session: navigation, the shared sidebar, then the page.

    st.navigation (not pages/ auto-discovery) so that the shared sidebar is rendered ONCE, here, before
    every page: one set of widgets, one ExpansionConfig, one URL, whichever page is open.

    A checkout has a top-level `pages/` folder beside `app.py`, and Streamlit routes through such a
    folder until the first st.navigation call of the process: a link to /convergence on a server's
    first run starts `pages/convergence.py` instead of `app.py`. That script calls `run()` too, and
    st.navigation (public API) resolves the requested page by its url_path, so the link opens the
    right page with the sidebar. The installed package has no `pages/` folder beside its script
    (`script/fpxint_app.py`), so this never happens there.
    """
    st.set_page_config(page_title="fpxint: FP=xINT explorer", page_icon=":material/functions:", layout="wide")
    page = st.navigation([st.Page(PAGE_DIR / f, title=title, icon=icon, url_path=url, default=url == "expand")
                          for f, title, icon, url in PAGES])
    sidebar()
    page.run()


@contextlib.asynccontextmanager
async def warm_at_start(_app):
    """st.App lifespan: computes the default view into the app's caches before the server serves.

    Imports, the built-in model, its expansion and metrics: the first visitor's first result then does
    not wait for torch to import. FPXINT_NO_WARMUP=1 skips it (read here: the app is an edge).
    FPXINT_WARM_LM=<language model> (or 1: smollm2_135m) also loads that model and computes its first results:
    opt-in, as it holds the model in memory from the start and delays serving by its load.
    """
    lm = os.environ.get("FPXINT_WARM_LM", "").strip()
    lm = "smollm2_135m" if lm == "1" else "" if lm == "0" else lm

    def work():
        # The cached functions run here outside any session: silence Streamlit's per-call warning about it
        # while the server is not serving yet, and restore it after.
        quiet = logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context")
        level, t0 = quiet.level, time.perf_counter()
        quiet.setLevel(logging.ERROR)
        try:
            prewarm()  # the default view, into the app's own caches
            print(f"  fpxint: default view computed at start-up in {time.perf_counter() - t0:.1f} s", flush=True)
        except Exception as e:  # noqa: BLE001 - only costs the first visitor time; the page reports real errors
            print(f"  fpxint: start-up warm-up skipped ({type(e).__name__}: {e})", flush=True)
        try:
            if lm:
                print(f"  fpxint: {lm}'s first results computed at start-up in {prewarm_lm(lm):.1f} s", flush=True)
        except Exception as e:  # noqa: BLE001 - as above
            print(f"  fpxint: start-up warm-up of {lm} skipped ({type(e).__name__}: {e})", flush=True)
        finally:
            quiet.setLevel(level)

    if os.environ.get("FPXINT_NO_WARMUP") != "1":
        await asyncio.to_thread(work)  # off the event loop; the server starts serving when it is done
    # Streamlit runs a full gc.collect() after every script run (runner.postScriptGC) and holds the GIL
    # through it, so the run's messages wait in the queue: with torch, pandas and plotly loaded that is
    # ~0.3-0.6 s on every slider move. What is alive now (modules, the built-in model) lives as long as
    # the server: frozen, it is left out of every later collection (refcounting still frees it).
    gc.collect()
    gc.freeze()
    yield
