"""Warm the engine once per process, so the first visitor of a freshly started app does not pay for it.

A new Python process spends ~2 s importing torch, pandas and plotly and another second on torch's first
convolutions, BatchNorm folding (torch.fx) and loading the fused C kernel. `app.py` calls `warm()` from a
background thread as the server starts (an `st.App` lifespan hook); by the time a browser opens the page,
only the default view's own work is left. Nothing here touches Streamlit or any cache of the app: the
first session still computes its own results; it just finds the process warm.
"""
from __future__ import annotations

import time


def warm(model: str | None = None) -> dict:
    """Import the engine and run one expansion and forward pass of `model` (default: the built-in model).

    Returns:
        {"model": name, "seconds": wall time} for logging.
    """
    t0 = time.perf_counter()
    import torch

    from . import analysis, cost, plots, reports  # noqa: F401  (imports are the point: plotly, pandas)
    from .config import ExpansionConfig
    from .data import load_data
    from .zoo import DEFAULT_MODEL, cache_dir, find_shared, get_spec, load_model

    name = model or DEFAULT_MODEL
    lm = load_model(name, shared_dir=find_shared(), device="cpu")
    if get_spec(name).dataset == "digits":
        data = load_data("digits", lm.spec, limit=64, cache_dir=cache_dir())
        x, y = data.images, data.labels
    else:
        x, y = torch.randn((4, *lm.spec.input_size)), None
    cfg = ExpansionConfig()
    fp_logits, _ = analysis.logits_of(lm.model, (x, y), 64, "cpu")
    analysis.evaluate(lm.model, cfg, (x, y), fp_logits, 64, "cpu")
    cost.cost_summary(lm.model, cfg, lm.spec.input_size)
    return {"model": name, "seconds": time.perf_counter() - t0}
