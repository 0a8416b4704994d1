"""The app's cached computations: one `st.cache_data` wrapper per page result, keyed by model +
`cfg.to_json()` + data description, around the plain functions of `fpxint.views` (no widgets inside,
a progress bar each: Streamlit replays it on a cache hit)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from .. import analysis, views
from ..allocation import Budget, allocate, calibration_split, cost_accuracy_curve
from ..config import ExpansionConfig
from ..model import expanded_layers
from .loaders import DataRef, ModelRef, expanded_model, images_of, model_of
from .widgets import _Progress


@st.cache_data(max_entries=128, show_spinner=False)
def expansion_metrics(mref: ModelRef, cfg_json: str, dref: DataRef) -> dict:
    """FP and expanded top-1 / fidelity, timing and cost of one configuration."""
    cfg = ExpansionConfig.from_json(cfg_json)
    bar = _Progress(f"Evaluating {cfg.label()}")
    out = views.expansion_metrics(model_of(mref), images_of(dref), cfg, mref.device, bar, force=True)  # run_block admitted it
    bar.done()
    return out


@st.cache_data(max_entries=64, show_spinner=False)
def residuals(mref: ModelRef, cfg_json: str, dref: DataRef, space: str) -> pd.DataFrame:
    """Per layer x term errors: weight space (weight_residuals) or output space on the probe batch."""
    lm, cfg = model_of(mref), ExpansionConfig.from_json(cfg_json)
    if space == "weight":
        return analysis.weight_residuals(lm.model, cfg)
    bar = _Progress("Layer outputs")
    out = views.output_residuals(lm, images_of(dref), cfg, mref.device, bar)
    bar.done()
    return out


@st.cache_data(max_entries=64, show_spinner=False)
def convergence(mref: ModelRef, cfg_json: str, dref: DataRef, bits: tuple[int, ...], max_terms: int) -> tuple:
    """(weight residuals, model output errors) for each bit width, 1..max_terms terms."""
    bar = _Progress("Convergence")
    out = views.convergence(model_of(mref), images_of(dref), ExpansionConfig.from_json(cfg_json), bits, max_terms,
                            mref.device, bar)
    bar.done()
    return out


@st.cache_data(max_entries=32, show_spinner=False)
def accuracy(mref: ModelRef, cfg_json: str, dref: DataRef, bits: tuple[int, ...], max_terms: int) -> dict:
    """Top-1 (or agreement) over bits x terms with cost columns, and the equal-budget comparison."""
    bar = _Progress("Accuracy grid")
    out = views.accuracy(model_of(mref), images_of(dref), ExpansionConfig.from_json(cfg_json), bits, max_terms,
                         mref.device, bar, force=True)  # run_block admitted it
    bar.done()
    return out


@st.cache_data(max_entries=16, show_spinner=False)
def basis_demo(mref: ModelRef, cfg_json: str, dref: DataRef, seed: int, layer: str | None = None) -> dict:
    """Sums the basis models in a shuffled order (AbelianAdd) and as separate networks; the group laws
    on the network and on `layer` alone."""
    probe = views.probe(model_of(mref).spec, images_of(dref))[:32].to(mref.device)
    bar = _Progress("Basis models")
    out = views.basis_demo(expanded_model(mref, cfg_json), probe, seed, bar, layer)
    bar.done()
    return out


@st.cache_data(max_entries=8, show_spinner=False)
def compare(mref: ModelRef, cfg_a: str, cfg_b: str, dref: DataRef) -> dict:
    """Metrics, output-error curves and per-layer weight errors of two configurations."""
    lm, data = model_of(mref), images_of(dref)
    return {tag: {"metrics": expansion_metrics(mref, cj, dref),
                  **views.compare_curves(lm, data, ExpansionConfig.from_json(cj), mref.device)}
            for tag, cj in (("A", cfg_a), ("B", cfg_b))}


@st.cache_data(max_entries=4, show_spinner="Serializing the expanded model…")
def export_bytes(mref: ModelRef, cfg_json: str) -> tuple[bytes, str]:
    from ..export import save_expanded

    return save_expanded(expanded_model(mref, cfg_json), mref.name)


def layer_terms(mref: ModelRef, cfg_json: str, layer: str) -> dict:
    """The integer terms Q_k (signed), scales s_k and bits of one layer of the expanded model."""
    return views.layer_terms(dict(expanded_layers(expanded_model(mref, cfg_json)))[layer])


def expanded_layer_names(mref: ModelRef, cfg_json: str) -> list[str]:
    return [n for n, _ in expanded_layers(expanded_model(mref, cfg_json))]


@st.cache_data(max_entries=16, show_spinner=False)
def allocation(mref: ModelRef, cfg_json: str, dref: DataRef, budget: str, mode: str, n_calib: int, max_terms: int,
               solver: str) -> dict:
    """Per-layer terms chosen on `n_calib` stratified images of the data (seed 0) under `budget`, and the
    cost / accuracy curve of uniform and allocated configs on the other images."""
    lm, data, cfg = model_of(mref), images_of(dref), ExpansionConfig.from_json(cfg_json)
    lab = data.labels
    ci, ei = calibration_split(lab, len(data.images), n_calib)
    bar = st.progress(0.0, text="Measuring layer sensitivity…")
    a = allocate(lm.model, cfg, Budget.parse(budget), data.images[ci], None if lab is None else lab[ci], mode=mode,
                 max_terms=max_terms, solver=solver, device=mref.device,
                 progress=lambda f, t: bar.progress(0.7 * f, text=f"Sensitivity: {t}"))
    terms = sorted({1, 2, 3, max(cfg.w_terms, cfg.a_terms), max(cfg.w_terms, cfg.a_terms) + 1} - {0})
    curve = cost_accuracy_curve(lm.model, cfg, data.images[ei], None if lab is None else lab[ei],
                                [("allocated", a.config)], terms, device=mref.device,
                                progress=lambda f, t: bar.progress(0.7 + 0.3 * f, text=f"Evaluating: {t}"))
    bar.empty()
    return {"layers": a.layers, "config": a.config.to_json(), "cost": a.cost, "uniform": a.uniform_cost,
            "pred": a.predicted_sqnr_db, "calib_sqnr": a.measured_sqnr_db, "data": a.data, "curve": curve,
            "sens": a.sensitivity, "candidates": a.candidates, "n_calib": n_calib, "n_eval": len(ei),
            "budget": budget}
