"""fpxint app: explore FP=xINT series-expansion quantization.  Run: streamlit run app.py

This file plays two parts. Streamlit runs it as a script (`__name__ == "__main__"`) for every session:
that is the app below. `streamlit run app.py` also imports it once as a module to look for an ASGI app:
there it defines `app = st.App(...)`, whose lifespan hook computes the default view into the app's caches
(imports, the built-in model, its expansion and metrics) before the server accepts its first connection, so that the first visitor's first result
does not wait for torch to import. FPXINT_NO_WARMUP=1 skips it.
"""
import streamlit as st

if __name__ == "__main__":
    from fpxint import app as ui

    st.set_page_config(page_title="fpxint: FP=xINT explorer", page_icon=":material/functions:", layout="wide")

    # st.navigation (not pages/ auto-discovery) so that the shared sidebar is rendered ONCE, here, before
    # every page: one set of widgets, one ExpansionConfig, one URL, whichever page is open. Each url_path
    # equals the name Streamlit's legacy pages/ routing derives from the file name; that routing still
    # handles a server's very first run, and ui.header() then hands control back to this script.
    PAGES = [
        st.Page("pages/1_expand.py", title="Expand", icon=":material/play_arrow:", url_path="expand", default=True),
        st.Page("pages/2_residuals.py", title="Layer residuals", icon=":material/grid_on:", url_path="residuals"),
        st.Page("pages/3_convergence.py", title="Convergence", icon=":material/trending_down:",
                url_path="convergence"),
        st.Page("pages/4_accuracy.py", title="Accuracy recovery", icon=":material/target:", url_path="accuracy"),
        st.Page("pages/5_basis.py", title="Basis models", icon=":material/functions:", url_path="basis"),
        st.Page("pages/6_compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
        st.Page("pages/7_export.py", title="Export", icon=":material/download:", url_path="export"),
        st.Page("pages/8_allocate.py", title="Allocate terms", icon=":material/tune:", url_path="allocate"),
        st.Page("pages/9_explain.py", title="Explain (talk mode)", icon=":material/slideshow:", url_path="explain"),
    ]
    page = st.navigation(PAGES)
    ui.sidebar()
    page.run()
else:
    import asyncio
    import contextlib
    import gc
    import logging
    import os
    import time

    @contextlib.asynccontextmanager
    async def _warm_at_start(_app):
        def work():
            # The cached functions run here outside any session: silence Streamlit's per-call warning about it
            # while the server is not serving yet, and restore it after.
            quiet = logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context")
            level, t0 = quiet.level, time.perf_counter()
            quiet.setLevel(logging.ERROR)
            try:
                from fpxint import app as ui

                ui.prewarm()  # the default view, into the app's own caches
                print(f"  fpxint: default view computed at start-up in {time.perf_counter() - t0:.1f} s", flush=True)
            except Exception as e:  # only costs the first visitor time; the page reports real errors itself
                print(f"  fpxint: start-up warm-up skipped ({type(e).__name__}: {e})", flush=True)
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

    app = st.App(__file__, lifespan=_warm_at_start)
