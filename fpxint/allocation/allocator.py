"""Beyond the paper: per-layer term allocation (spend series terms where they matter).

The paper expands every layer with the same number of terms. Here each expanded layer gets its own
weight and activation term counts, chosen under a budget:

1. **Sensitivity.** For every layer l and side (weights / activations), the model-output noise
   when only that layer is expanded with k terms on that side and everything else stays FP:
   N_w(l, k) and N_a(l, k), as noise power relative to the FP output's power.
2. **Additive noise model.** The whole network's relative output noise is predicted as
   sum_l N_w(l, w_l) + N_a(l, a_l): quantization noises from different layers and sides are nearly
   uncorrelated, so their powers add (the cross term dW * dX is second order).
3. **Solver.** Minimise the predicted noise subject to a cost (integer GEMMs, BOPs or weight bits,
   all as `fpxint.cost` counts them): `dp` solves this multiple-choice knapsack exactly (integer
   costs; BOPs and bits rounded up to 1/2000 of the budget, so the budget still holds), `greedy`
   adds the one term with the best noise reduction per unit cost until the budget is spent.
   Targets (an output SQNR, a top-1 drop) bisect the cost budget and check each candidate on the
   calibration images themselves, so the target holds as measured there, not only as predicted.
4. **Check.** The additive model is right to a dB or two, and a solver that seeks its minimum also
   seeks its errors. So the solver's choice is measured on the calibration inputs beside the best
   predicted per-side uniform configs (the same (w, a) in every layer) that fit the budget, and the
   best measured one is returned (`Allocation.solver` says which; `Allocation.candidates` lists all).

The result is an ordinary `ExpansionConfig` whose per-layer overrides carry the term counts.
Data each mode uses ("mode"): `weights` (no forward pass: weight residual energy per layer plus the
activation residual of a Gaussian / rectified-Gaussian stand-in, every layer at gain 1),
`synthetic` (Gaussian inputs of the model's input size), `unlabeled` and `labeled` (real images;
labels add top-1 to the tables and allow a top-1-drop target).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from . import knapsack as ks
from .. import metrics
from ..config import MAX_TERMS, ExpansionConfig, LayerOverride
from ..cost import choice_costs, cost_summary, layer_macs
from ..data import random_images
from ..model import expand, fold_batchnorm, target_device
from .sensitivity import (Progress, layer_sensitivity, plan_layers, sensitivity_ranking, to_db,
                          weights_only_sensitivity)

__all__ = ["Budget", "Allocation", "allocate", "cost_accuracy_curve", "layer_sensitivity", "sensitivity_ranking",
           "weights_only_sensitivity", "MODES", "SOLVERS", "COSTS", "TARGETS"]
MODES = ("weights", "synthetic", "unlabeled", "labeled")
SOLVERS = ("dp", "greedy")
COSTS = ks.COSTS
TARGETS = ("sqnr_db", "top1_drop")
_ALIASES = {"gemms": "int_gemms", "int_gemms": "int_gemms", "bops": "bops", "weight_bits": "weight_bits",
            "bits": "weight_bits", "sqnr": "sqnr_db", "sqnr_db": "sqnr_db", "top1_drop": "top1_drop",
            "drop": "top1_drop"}
_N_UNIFORM = 3   # per-side uniform configs measured beside the solver's choice
_STOP_DB = 80.0  # a layer side this far below the output adds nothing a budget can see: extrapolate beyond


@dataclass(frozen=True)
class Budget:
    """What the allocation may spend, or what it must reach.

    Attributes:
        kind: a cost cap ("int_gemms", "bops", "weight_bits") or a target ("sqnr_db": model-output
            SQNR in dB on the calibration images; "top1_drop": top-1 points below FP, needs labels).
        value: the cap or the target.
        relative: for caps, `value` is a multiple of the base (uniform) config's cost.
        metric: the cost a target minimises.

    Example:
        >>> Budget.parse("gemms=0.75x")
        Budget(kind='int_gemms', value=0.75, relative=True, metric='int_gemms')
    """

    kind: str
    value: float
    relative: bool = False
    metric: str = "int_gemms"

    def __post_init__(self) -> None:
        if self.kind not in COSTS + TARGETS:
            raise ValueError(f"budget kind {self.kind!r} is not allowed; choose one of {', '.join(COSTS + TARGETS)}")
        if self.metric not in COSTS:
            raise ValueError(f"budget metric {self.metric!r} is not allowed; choose one of {', '.join(COSTS)}")
        if not math.isfinite(self.value) or (self.kind != "sqnr_db" and self.value < 0):
            raise ValueError(f"budget value {self.value!r} must be a finite number (>= 0 except for sqnr_db)")
        if self.relative and self.kind in TARGETS:
            raise ValueError(f"a relative ('x') value is for cost caps, not for the target {self.kind}")

    @classmethod
    def parse(cls, text: str, metric: str = "int_gemms") -> "Budget":
        """Parses "gemms=0.75x", "bops=2e8", "weight_bits=0.8x", "sqnr=30" or "top1_drop=0.5"."""
        m = re.fullmatch(r"\s*([a-z_0-9]+)\s*=\s*([0-9.eE+-]+)\s*(x?)\s*", text or "")
        if not m or m.group(1) not in _ALIASES:
            raise ValueError(f"budget {text!r} is not understood; write e.g. gemms=0.75x, bops=2e8, "
                             "weight_bits=0.8x, sqnr=30 or top1_drop=0.5")
        try:
            value = float(m.group(2))
        except ValueError:
            raise ValueError(f"budget {text!r}: {m.group(2)!r} is not a number") from None
        return cls(_ALIASES[m.group(1)], value, bool(m.group(3)), _ALIASES.get(metric, metric))

    def describe(self) -> str:
        if self.kind in TARGETS:
            return f"{self.kind} {'>=' if self.kind == 'sqnr_db' else '<='} {self.value:g}, minimising {self.metric}"
        return f"{self.kind} <= {self.value:g}{'x uniform' if self.relative else ''}"


@dataclass(frozen=True, eq=False)
class Allocation:
    """An allocation: the config to use and how it was chosen.

    Attributes:
        config: the base config plus one override per expanded layer (export with `config.to_json()`).
        layers: per layer, in network order: layer, index, w_bits, w_terms, a_bits, a_terms, int_gemms,
            bops, weight_bits, noise_db (predicted relative output noise of the layer, dB).
        cost / uniform_cost: `fpxint.cost.cost_summary` of the allocation and of the base config.
        predicted_sqnr_db: SQNR of the additive noise model; measured_sqnr_db: on the calibration
            images (None in `weights` mode); top1 / fp_top1 on them when labeled.
        data: which data the choice used; sensitivity: the tables N_w, N_a it used.
        solver: which candidate won: the solver ("dp" / "greedy") or a per-side uniform config
            ("uniform w6 a2": the same terms in every layer) that measured better on the calibration
            inputs; candidates: every candidate measured (cost, predicted and measured SQNR).
    """

    config: ExpansionConfig
    layers: pd.DataFrame
    budget: Budget
    cap: float | None
    cost: dict
    uniform_cost: dict
    predicted_sqnr_db: float
    measured_sqnr_db: float | None
    top1: float | None
    fp_top1: float | None
    mode: str
    data: str
    solver: str
    sensitivity: pd.DataFrame = field(repr=False)
    candidates: pd.DataFrame = field(repr=False, default=None)


def _config(cfg: ExpansionConfig, plan, choice) -> ExpansionConfig:
    ovs = dict(cfg.overrides)
    for (_, name, _, spec), (w, a) in zip(plan, choice):
        ovs[name] = LayerOverride(w_bits=spec.w_bits, w_terms=w, a_bits=spec.a_bits, a_terms=a)
    return cfg.replace(overrides=ovs)


def allocate(model: nn.Module, cfg: ExpansionConfig, budget: Budget | str, probe: torch.Tensor | None = None,
             labels: torch.Tensor | None = None, *, mode: str | None = None,
             input_shape: Sequence[int] | None = None, max_terms: int = 6, solver: str = "dp",
             sensitivity: pd.DataFrame | None = None, device: str | None = None,
             progress: Progress | None = None, macs: dict[str, int] | None = None) -> Allocation:
    """Chooses per-layer weight and activation term counts under a budget.

    Args:
        model: the FP model (never mutated).
        cfg: the base expansion: bits, grids, scale rule, policy; its own terms are the uniform
            reference that relative budgets ("0.75x") refer to.
        budget: a `Budget` or its text, e.g. "gemms=0.75x", "bops=2e8", "sqnr=30", "top1_drop=0.5".
        probe: calibration inputs (keep them disjoint from the images accuracy is reported on).
        labels: labels of `probe` (mode "labeled").
        mode: "weights", "synthetic", "unlabeled" or "labeled"; default from what is given.
        input_shape: per-sample input shape (C, H, W); needed when no probe is given.
        max_terms: largest term count tried per side and layer.
        solver: "dp" (exact on the additive model) or "greedy".
        sensitivity: tables from an earlier call (`Allocation.sensitivity`) to skip re-measuring.
        macs: MACs per layer (per sample, or per token for language models: `fpxint.lm.allocate_lm`),
            instead of counting them on a forward of zeros of `input_shape` (which needs a float input).

    Returns:
        An `Allocation`; `allocation.config` is an ordinary `ExpansionConfig`.

    Example:
        >>> a = allocate(model, ExpansionConfig(w_bits=3, a_bits=3, w_terms=4, a_terms=4), "gemms=0.75x",
        ...              probe=calib_images)
        >>> open("alloc.json", "w").write(a.config.to_json())
    """
    budget = Budget.parse(budget) if isinstance(budget, str) else budget
    mode = mode or ("weights" if probe is None else "labeled" if labels is not None else "unlabeled")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed; choose one of {', '.join(MODES)}")
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not allowed; choose one of {', '.join(SOLVERS)}")
    if isinstance(max_terms, bool) or not isinstance(max_terms, int) or not 1 <= max_terms <= MAX_TERMS:
        raise ValueError(f"max_terms={max_terms!r} must be an integer 1..{MAX_TERMS}")
    if input_shape is None and probe is None:
        raise ValueError("give probe inputs or input_shape (C, H, W): the cost of a layer depends on its input size")
    if mode in ("unlabeled", "labeled") and probe is None:
        raise ValueError(f"mode {mode!r} needs probe images; use mode='synthetic' or 'weights' to go without")
    if mode == "labeled" and labels is None:
        raise ValueError("mode 'labeled' needs labels for the probe images")
    labels = labels if mode == "labeled" else None
    if budget.kind == "top1_drop" and labels is None:
        raise ValueError("a top1_drop target needs labeled calibration images (mode='labeled'); "
                         "use an sqnr target without labels")
    input_shape = tuple(input_shape or probe.shape[1:])
    if mode == "synthetic":  # the inputs' size only; their values are Gaussian
        probe = random_images(len(probe) if probe is not None else 64, input_shape)
    if mode == "weights":
        probe = None
    dev = target_device(model, device)
    fm, plan = plan_layers(model, cfg)
    act = cfg.expands_activations
    metric = budget.kind if budget.kind in COSTS else budget.metric
    if metric == "int_gemms" and not act:
        raise ValueError("this config keeps activations in FP (no integer GEMMs): budget bops or weight_bits instead")
    if sensitivity is None:
        sides = ("weight", "activation") if act else ("weight",)
        sensitivity = (weights_only_sensitivity(model, cfg, max_terms) if probe is None else
                       layer_sensitivity(model, cfg, probe, None, range(1, max_terms + 1), sides, _STOP_DB, dev,
                                         progress))
    nw, na = ks.noise_tables(sensitivity, plan, max_terms)
    fixed_a = [spec.a_terms if act else 1 for *_, spec in plan] if metric == "weight_bits" or not act else None
    all_costs = choice_costs(cfg, plan, macs if macs is not None else layer_macs(model, input_shape, fm), max_terms)
    grid, noise, costs = ks.choices(nw, na, all_costs[metric], fixed_a)
    with torch.no_grad():
        ref = fm.to(dev)(probe.to(dev)) if probe is not None else None
    fp_top1 = metrics.top1(ref, labels)
    measured: dict[tuple, tuple[float | None, float | None]] = {}
    names: dict[tuple, str] = {}

    @torch.no_grad()
    def measure(choice) -> tuple[float | None, float | None]:
        key = tuple(choice)
        if probe is not None and key not in measured:
            y = expand(model, _config(cfg, plan, choice), device=dev)(probe.to(dev))
            top1 = metrics.top1(y, labels)
            measured[key] = (metrics.sqnr_db(ref, y), top1)
        return measured.get(key, (None, None))

    def predicted(choice) -> float:
        return to_db(sum(n[g.index(c)] for n, g, c in zip(noise, grid, choice)))

    def cost_of(choice) -> float:
        return float(sum(c[g.index(x)] for c, g, x in zip(costs, grid, choice)))

    def candidates(cap: float) -> list[tuple[str, list]]:
        """The solver's choice, then the best predicted per-side uniform configs (same (w, a) in every
        layer) under the cap. The additive model is off by a dB or two, and the solver, by seeking
        its minimum, also seeks its errors: measuring a few candidates keeps it honest."""
        first = (ks.solve_dp if solver == "dp" else ks.solve_greedy)(grid, noise, costs, cap)
        out = [(solver, first)] if first is not None else []
        uni = [[(w, a) for _ in plan] if fixed_a is None else [(w, fa) for fa in fixed_a]
               for w in range(1, max_terms + 1) for a in range(1, max_terms + 1 if fixed_a is None else 2)]
        uni = sorted((u for u in uni if cost_of(u) <= cap), key=predicted, reverse=True)[:_N_UNIFORM]
        out += [(f"uniform w{u[0][0]} a{u[0][1]}" if fixed_a is None else f"uniform w{u[0][0]}", u) for u in uni]
        for label, c in out:
            names.setdefault(tuple(c), label)
        return out

    uniform = cost_summary(model, cfg, input_shape, macs)
    cap = None
    if budget.kind in COSTS:
        cap = budget.value * uniform[metric] if budget.relative else budget.value
        cands = candidates(cap)
        if not cands:
            cheapest = sum(float(c.min()) for c in costs)
            raise ValueError(f"budget {budget.describe()} = {cap:g} {metric} is below the cheapest allocation "
                             f"(one term per side in every layer: {cheapest:g})")
        # Best measured SQNR on the calibration inputs; without data the solver's (best predicted) choice.
        label, choice = max(cands, key=lambda lc: (measure(lc[1])[0] or -math.inf, predicted(lc[1])))
    else:
        label, choice = _bisect(budget, costs, candidates, measure, predicted, cost_of, fp_top1, progress)
    table = pd.DataFrame([{"layer": name, "index": idx, "w_bits": spec.w_bits, "w_terms": w, "a_bits": spec.a_bits,
                           "a_terms": a, **{c: all_costs[c][i, w - 1, a - 1] for c in COSTS},
                           "noise_db": -to_db(nw[i, w - 1] + (0 if fixed_a else na[i, a - 1]))}
                          for i, ((idx, name, _, spec), (w, a)) in enumerate(zip(plan, choice))])
    tried = pd.DataFrame([{"candidate": names.get(k, solver), "chosen": k == tuple(choice), metric: cost_of(k),
                           "predicted_sqnr_db": predicted(k), "measured_sqnr_db": sq, "top1": t1}
                          for k, (sq, t1) in (measured or {tuple(choice): (None, None)}).items()])
    n = len(probe) if probe is not None else 0
    what = {"weights": "weights only (no forward pass; activation stand-in: Gaussian / rectified Gaussian)",
            "synthetic": f"synthetic probe: {n} Gaussian inputs of shape {input_shape}",
            "unlabeled": f"unlabeled images: {n} calibration inputs",
            "labeled": f"labeled images: {n} calibration inputs with labels"}[mode]
    out_cfg = _config(cfg, plan, choice)
    sqnr, top1 = measure(choice)
    return Allocation(out_cfg, table, budget, cap, cost_summary(model, out_cfg, input_shape, macs), uniform,
                      predicted(choice), sqnr, top1, fp_top1, mode, what, label, sensitivity, tried)


def _bisect(budget: Budget, costs, candidates, measure, predicted, cost_of, fp_top1, progress):
    """The cheapest candidate found that meets the target (measured where there is data), by bisecting the cap."""
    def passing(cap: float):
        for label, choice in candidates(cap):
            sqnr, top1 = measure(choice)
            if budget.kind == "top1_drop":
                good = top1 >= fp_top1 - budget.value
            else:
                good = (sqnr if sqnr is not None else predicted(choice)) >= budget.value
            if good:
                return label, choice
        return None

    lo, hi = sum(float(c.min()) for c in costs), sum(float(c.max()) for c in costs)
    best = passing(hi)
    if best is None:
        raise ValueError(f"target {budget.describe()} is not reached even with every layer at its largest "
                         "term counts; raise max_terms or relax the target")
    integer = all(np.allclose(c, np.round(c)) for c in costs)
    for step in range(40):
        if hi - lo <= (1 if integer else 0.002 * hi):
            break
        if progress:
            progress(min(step / 12, 1.0), f"searching the budget: {lo:g} .. {hi:g}")
        mid = math.floor((lo + hi) / 2) if integer else (lo + hi) / 2
        found = passing(mid)
        if found is not None:
            best, hi = found, min(mid, cost_of(found[1]))
        else:
            lo = mid
    return best


@torch.no_grad()
def cost_accuracy_curve(model: nn.Module, cfg: ExpansionConfig, images: torch.Tensor,
                        labels: torch.Tensor | None = None, allocated: Sequence[tuple[str, ExpansionConfig]] = (),
                        terms: Sequence[int] = (1, 2, 3, 4), batch_size: int = 256, device: str | None = None,
                        progress: Progress | None = None) -> pd.DataFrame:
    """Accuracy against cost: uniform k terms (`cfg.with_terms(k)`) and each allocated config.

    Args:
        images, labels: the evaluation images (disjoint from the allocation's calibration images).
        allocated: (label, config) pairs.

    Returns:
        Columns: kind ("fp" / "uniform" / "allocated"), label, terms, int_gemms, bops, bops_vs_fp,
        weight_bits, sqnr_db, agreement, top1, fp_top1 (percent), n_images, config.
    """
    from ..analysis import logits_of  # analysis imports nothing from here; deferred to keep import light

    dev = target_device(model, device)
    fp_logits, _ = logits_of(model, (images, labels), batch_size, dev)
    acc = (lambda lg: metrics.top1(lg, labels))
    runs = [("uniform", f"uniform {k} terms", k, cfg.with_terms(k)) for k in terms]
    runs += [("allocated", label, None, c) for label, c in allocated]
    folded = fold_batchnorm(model)  # folded and MAC-counted once for every row's cost, not per row
    macs = layer_macs(model, tuple(images.shape[1:]), folded)
    rows = [{"kind": "fp", "label": "FP", "terms": None, "int_gemms": 0, "bops": None, "bops_vs_fp": 1.0,
             "weight_bits": None, "sqnr_db": math.inf, "agreement": 100.0, "top1": acc(fp_logits),
             "fp_top1": acc(fp_logits), "n_images": len(images), "config": None}]
    for n, (kind, label, k, c) in enumerate(runs):
        if progress:
            progress(n / len(runs), label)
        lg, _ = logits_of(expand(model, c, device=dev), (images, labels), batch_size, dev)
        s = cost_summary(model, c, tuple(images.shape[1:]), macs, folded)
        rows.append({"kind": kind, "label": label, "terms": k, "int_gemms": s["int_gemms"], "bops": s["bops"],
                     "bops_vs_fp": s["bops_vs_fp"], "weight_bits": s["weight_bits"],
                     "sqnr_db": metrics.sqnr_db(fp_logits, lg),
                     "agreement": 100 * metrics.agreement(fp_logits, lg),
                     "top1": acc(lg), "fp_top1": acc(fp_logits), "n_images": len(images), "config": c.to_json()})
    if progress:
        progress(1.0, "done")
    return pd.DataFrame(rows)
