"""Admission in the app: the server's limits (st.secrets, then the environment), its one queue of heavy
runs, and each run's estimate checked before it starts (`fpxint.admission` does the arithmetic)."""
from __future__ import annotations

import os
from typing import Any, Callable

import streamlit as st

from .. import admission, views
from ..config import ExpansionConfig
from ..zoo import get_spec
from .context import Context


def settings() -> dict:
    """FPXINT_* settings: st.secrets (top level, or a [fpxint] table), then the environment, which wins."""
    merged: dict = {}
    try:
        secrets = st.secrets
        merged.update({k: v for k, v in secrets.items() if str(k).startswith("FPXINT_")})
        if "fpxint" in secrets:
            merged.update({f"FPXINT_{str(k).upper()}": v for k, v in secrets["fpxint"].items()})
    except Exception:  # noqa: BLE001 - no secrets file is the normal case
        pass
    merged.update({k: v for k, v in os.environ.items() if k.startswith("FPXINT_")})
    return merged


def limits() -> tuple[admission.Limits, str | None]:
    """The server's limits and, when a setting is malformed, why the defaults are used instead."""
    try:
        return admission.Limits.from_env(settings()), None
    except ValueError as e:
        return admission.Limits(), f"{e}; the default limits apply"


@st.cache_resource
def _gate() -> admission.RunGate:
    """One queue for the whole server (every session is a thread of this process)."""
    return admission.RunGate(limits()[0].max_concurrent)


@st.cache_resource(max_entries=32, show_spinner=False)
def _profile(name: str) -> admission.Profile:
    return admission.profile(get_spec(name))


def estimate(ctx: Context, cfg: ExpansionConfig | None = None, passes: int = 1,
             images: int | None = None) -> admission.Estimate | None:
    """The estimated memory and time of a run on this context (None before the sidebar is ready)."""
    if not ctx.ready:
        return None
    n = len(ctx.data) if images is None else images
    return admission.estimate(_profile(ctx.model_name), cfg or ctx.cfg, n, views.batch_size(ctx.loaded.spec), passes)


def sweep_work(ctx: Context, bits: tuple[int, ...], max_terms: int, probe: bool = False) -> dict:
    """run_block's `work` for a bits x terms sweep: its heaviest config, its passes, its images."""
    if not ctx.ready:
        return {}
    top = ctx.cfg.replace(w_bits=max(bits), a_bits=max(bits), w_terms=max_terms, a_terms=max_terms)
    return {"cfg": top, "passes": len(bits) * max_terms, "images": probe_size(ctx) if probe else None}


def probe_size(ctx: Context) -> int | None:
    return len(views.probe(ctx.loaded.spec, ctx.data)) if ctx.ready else None


def _admitted(ctx: Context, compute: Callable[[], Any], work: dict) -> Any:
    """Checks the run against the limits, waits for a slot in the server's queue, then computes."""
    lim, problem = limits()
    if problem:
        st.warning(f"Server limits: {problem}")
    try:
        est = estimate(ctx, **work)
    except Exception:  # noqa: BLE001 - no estimate (an unusual model) does not block the run; the queue still applies
        est = None
    if est is not None:
        admission.check(est, lim, reduce="number of images (sidebar), the terms, or the bit widths swept")
    gate, note = _gate(), st.empty()

    def on_wait(ahead: int) -> None:
        note.info(f"Waiting for a free slot: {ahead} run{'' if ahead == 1 else 's'} ahead of yours, "
                  f"{gate.running} running (this server runs {gate.slots} at a time). Press **Stop** to leave "
                  "the queue.", icon=":material/hourglass_top:")

    with gate.slot(on_wait=on_wait):
        note.empty()
        return compute()
