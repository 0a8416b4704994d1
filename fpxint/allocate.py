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

from .config import MAX_TERMS, ExpansionConfig, LayerOverride
from .cost import FP_BITS, cost_summary, layer_macs
from .layers import pair_matrix
from .model import expand, resolve_device
from .sensitivity import (FLOOR, Progress, layer_sensitivity, plan_layers, rel_noise, sensitivity_ranking, to_db,
                          weights_only_sensitivity)

__all__ = ["Budget", "Allocation", "allocate", "cost_accuracy_curve", "layer_sensitivity", "sensitivity_ranking",
           "weights_only_sensitivity", "MODES", "SOLVERS", "COSTS", "TARGETS"]
MODES = ("weights", "synthetic", "unlabeled", "labeled")
SOLVERS = ("dp", "greedy")
COSTS = ("int_gemms", "bops", "weight_bits")
TARGETS = ("sqnr_db", "top1_drop")
_ALIASES = {"gemms": "int_gemms", "int_gemms": "int_gemms", "bops": "bops", "weight_bits": "weight_bits",
            "bits": "weight_bits", "sqnr": "sqnr_db", "sqnr_db": "sqnr_db", "top1_drop": "top1_drop",
            "drop": "top1_drop"}
_DP_BINS = 2000  # cost resolution of the knapsack for non-integer costs
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


def _tables(sens: pd.DataFrame, plan, max_terms: int) -> tuple[np.ndarray, np.ndarray]:
    """N_w, N_a as [layers, max_terms] arrays, made non-increasing in k (more terms never hurt).

    A side that was not measured (activations in FP) is all zeros.
    """
    out = []
    for side in ("weight", "activation"):
        t = np.zeros((len(plan), max_terms))
        for i, (_, name, _, _) in enumerate(plan):
            d = sens[(sens.layer == name) & (sens.side == side)].sort_values("terms").noise.to_numpy()
            if len(d):
                if len(d) < max_terms:
                    raise ValueError(f"the sensitivity table has {len(d)} terms for {name}; max_terms is {max_terms}")
                t[i] = np.minimum.accumulate(d[:max_terms])
        out.append(t)
    return out[0], out[1]


def _layer_costs(model, cfg: ExpansionConfig, plan, input_shape, max_terms: int) -> dict[str, np.ndarray]:
    """Cost of every (w_terms, a_terms) choice per layer, [layers, max_terms, max_terms], as fpxint.cost counts it."""
    macs = layer_macs(model, tuple(input_shape))
    act = cfg.expands_activations
    ka = max([max_terms] + [spec.a_terms for *_, spec in plan])  # pinned activation terms may exceed max_terms
    out = {c: np.zeros((len(plan), max_terms, ka)) for c in COSTS}
    for i, (_, name, layer, spec) in enumerate(plan):
        groups = layer.weight.shape[0] if cfg.w_granularity == "per_channel" else 1
        a_bits = spec.a_bits if act else FP_BITS
        for w in range(1, max_terms + 1):
            for a in range(1, ka + 1):
                pairs = int(pair_matrix(w, a if act else 1, cfg.truncation if act else "full", cfg.total_order).sum())
                out["int_gemms"][i, w - 1, a - 1] = pairs if act else 0
                out["bops"][i, w - 1, a - 1] = macs.get(name, 0) * spec.w_bits * a_bits * pairs
                out["weight_bits"][i, w - 1, a - 1] = layer.weight.numel() * spec.w_bits * w + groups * w * FP_BITS
    return out


def _choices(nw, na, cost, fixed_a: list[int] | None):
    """Per layer: the allowed (w, a) choices with their predicted noise and cost.

    `fixed_a` pins each layer's activation terms (weight-bit budgets, FP activations): storage does
    not depend on them, so they are not the allocator's to spend.
    """
    kw, ka = nw.shape[1], na.shape[1]
    grid = [[(w, a) for w in range(1, kw + 1) for a in ([fixed_a[i]] if fixed_a else range(1, ka + 1))]
            for i in range(len(nw))]
    noise = [np.array([nw[i, w - 1] + (0.0 if fixed_a else na[i, a - 1]) for w, a in g]) for i, g in enumerate(grid)]
    costs = [np.array([cost[i, w - 1, a - 1] for w, a in g]) for i, g in enumerate(grid)]
    return grid, noise, costs


def _solve_dp(grid, noise, costs, cap: float) -> list[tuple[int, int]] | None:
    """Exact minimum of the summed noise with total cost <= cap (costs rounded up to a grid)."""
    integer = all(np.allclose(c, np.round(c)) for c in costs) and cap <= 50 * _DP_BINS
    unit = 1.0 if integer else max(cap, 1e-12) / _DP_BINS
    units = [np.ceil(c / unit - 1e-9).astype(int) for c in costs]
    top = int(math.floor(cap / unit + 1e-9))
    if top < sum(int(u.min()) for u in units):
        return None
    best = np.full(top + 1, np.inf)
    best[0] = 0.0
    args = []
    for n, u in zip(noise, units):
        new, arg = np.full(top + 1, np.inf), np.full(top + 1, -1)
        for j in np.argsort(u, kind="stable"):
            if u[j] > top:
                continue
            cand = np.full(top + 1, np.inf)
            cand[u[j]:] = best[: top + 1 - u[j]] + n[j]
            better = cand < new
            new[better], arg[better] = cand[better], j
        best = new
        args.append(arg)
    b = int(np.argmin(best))
    if not math.isfinite(best[b]):
        return None
    out = []
    for g, arg, u in zip(reversed(grid), reversed(args), reversed(units)):
        j = int(arg[b])
        out.append(g[j])
        b -= int(u[j])
    return out[::-1]


def _solve_greedy(grid, noise, costs, cap: float) -> list[tuple[int, int]] | None:
    """From one term per side, repeatedly add the one term with the best noise cut per unit cost."""
    index = [{p: j for j, p in enumerate(g)} for g in grid]
    state = [min(g) for g in grid]  # (1, 1), or (1, pinned a)
    total = sum(c[ix[s]] for c, ix, s in zip(costs, index, state))
    if total > cap * (1 + 1e-12):
        return None
    while True:
        best, pick = -1.0, None
        for i, (w, a) in enumerate(state):
            ix = index[i]
            for nxt in ((w + 1, a), (w, a + 1)):
                if nxt not in ix:
                    continue
                dc = costs[i][ix[nxt]] - costs[i][ix[(w, a)]]
                dn = noise[i][ix[(w, a)]] - noise[i][ix[nxt]]
                if total + dc > cap * (1 + 1e-12) or dn <= 0:
                    continue
                gain = math.inf if dc <= 0 else dn / dc
                if gain > best:
                    best, pick = gain, (i, nxt, dc)
        if pick is None:
            return state
        i, nxt, dc = pick
        state[i], total = nxt, total + dc


def _config(cfg: ExpansionConfig, plan, choice) -> ExpansionConfig:
    ovs = dict(cfg.overrides)
    for (_, name, _, spec), (w, a) in zip(plan, choice):
        ovs[name] = LayerOverride(w_bits=spec.w_bits, w_terms=w, a_bits=spec.a_bits, a_terms=a)
    return cfg.replace(overrides=ovs)


def _summary_cost(model, cfg: ExpansionConfig, input_shape) -> dict:
    s = cost_summary(model, cfg, tuple(input_shape))
    s["weight_bits"] = int(round(s["effective_bits"] * s["params"]))
    return s


def allocate(model: nn.Module, cfg: ExpansionConfig, budget: Budget | str, probe: torch.Tensor | None = None,
             labels: torch.Tensor | None = None, *, mode: str | None = None,
             input_shape: Sequence[int] | None = None, max_terms: int = 6, solver: str = "dp",
             sensitivity: pd.DataFrame | None = None, device: str | None = None,
             progress: Progress | None = None) -> Allocation:
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
        gen = torch.Generator().manual_seed(0)
        probe = torch.randn((len(probe) if probe is not None else 64, *input_shape), generator=gen)
    if mode == "weights":
        probe = None
    dev = resolve_device(device)
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
    nw, na = _tables(sensitivity, plan, max_terms)
    fixed_a = [spec.a_terms if act else 1 for *_, spec in plan] if metric == "weight_bits" or not act else None
    all_costs = _layer_costs(model, cfg, plan, input_shape, max_terms)
    grid, noise, costs = _choices(nw, na, all_costs[metric], fixed_a)
    solve = _solve_dp if solver == "dp" else _solve_greedy
    uniform = _summary_cost(model, cfg, input_shape)

    with torch.no_grad():
        ref = fm.to(dev)(probe.to(dev)) if probe is not None else None
    fp_top1 = None if labels is None else 100 * (ref.argmax(1).cpu() == labels).float().mean().item()

    @torch.no_grad()
    def measure(choice) -> tuple[float | None, float | None]:
        if probe is None:
            return None, None
        y = expand(model, _config(cfg, plan, choice), device=dev)(probe.to(dev))
        top1 = None if labels is None else 100 * (y.argmax(1).cpu() == labels).float().mean().item()
        return to_db(rel_noise(ref, y)), top1

    def predicted(choice) -> float:
        return to_db(sum(nw[i, w - 1] + (na[i, a - 1] if fixed_a is None else 0) for i, (w, a) in enumerate(choice)))

    cap = None
    if budget.kind in COSTS:
        cap = budget.value * uniform[metric] if budget.relative else budget.value
        choice = solve(grid, noise, costs, cap)
        if choice is None:
            cheapest = sum(float(c.min()) for c in costs)
            raise ValueError(f"budget {budget.describe()} = {cap:g} {metric} is below the cheapest allocation "
                             f"(one term per side in every layer: {cheapest:g})")
    else:
        choice = _bisect(budget, grid, noise, costs, solve, measure, predicted, fp_top1, progress)
    sqnr, top1 = measure(choice)
    out_cfg = _config(cfg, plan, choice)
    table = pd.DataFrame([{"layer": name, "index": idx, "w_bits": spec.w_bits, "w_terms": w, "a_bits": spec.a_bits,
                           "a_terms": a, "noise_db": -to_db(nw[i, w - 1] + (0 if fixed_a else na[i, a - 1]))}
                          for i, ((idx, name, _, spec), (w, a)) in enumerate(zip(plan, choice))])
    for c in COSTS:
        table.insert(len(table.columns) - 1, c, [all_costs[c][i, w - 1, a - 1] for i, (w, a) in enumerate(choice)])
    n = len(probe) if probe is not None else 0
    what = {"weights": "weights only (no forward pass; activation stand-in: Gaussian / rectified Gaussian)",
            "synthetic": f"synthetic probe: {n} Gaussian inputs of shape {input_shape}",
            "unlabeled": f"unlabeled images: {n} calibration inputs",
            "labeled": f"labeled images: {n} calibration inputs with labels"}[mode]
    return Allocation(out_cfg, table, budget, cap, _summary_cost(model, out_cfg, input_shape), uniform,
                      predicted(choice), sqnr, top1, fp_top1, mode, what, solver, sensitivity)


def _bisect(budget: Budget, grid, noise, costs, solve, measure, predicted, fp_top1, progress):
    """Smallest cost cap whose allocation meets the target (measured where there is data)."""
    def ok(choice) -> bool:
        sqnr, top1 = measure(choice)
        if budget.kind == "top1_drop":
            return top1 >= fp_top1 - budget.value
        return (sqnr if sqnr is not None else predicted(choice)) >= budget.value

    lo, hi = sum(float(c.min()) for c in costs), sum(float(c.max()) for c in costs)
    best = solve(grid, noise, costs, hi)
    if not ok(best):
        raise ValueError(f"target {budget.describe()} is not reached even with every layer at its largest "
                         "term counts; raise max_terms or relax the target")
    integer = all(np.allclose(c, np.round(c)) for c in costs)
    for step in range(40):
        if hi - lo <= (1 if integer else 0.002 * hi):
            break
        if progress:
            progress(step / 20, f"searching the budget: {lo:g} .. {hi:g}")
        mid = math.floor((lo + hi) / 2) if integer else (lo + hi) / 2
        choice = solve(grid, noise, costs, mid)
        if choice is not None and ok(choice):
            best, hi = choice, mid
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
    from .analysis import logits_of  # analysis imports nothing from here; deferred to keep import light

    dev = resolve_device(device)
    fp_logits, _ = logits_of(model, (images, labels), batch_size, dev)
    acc = (lambda lg: None if labels is None else 100 * (lg.argmax(1) == labels).float().mean().item())
    runs = [("uniform", f"uniform {k} terms", k, cfg.with_terms(k)) for k in terms]
    runs += [("allocated", label, None, c) for label, c in allocated]
    rows = [{"kind": "fp", "label": "FP", "terms": None, "int_gemms": 0, "bops": None, "bops_vs_fp": 1.0,
             "weight_bits": None, "sqnr_db": math.inf, "agreement": 100.0, "top1": acc(fp_logits),
             "fp_top1": acc(fp_logits), "n_images": len(images), "config": None}]
    for n, (kind, label, k, c) in enumerate(runs):
        if progress:
            progress(n / len(runs), label)
        lg, _ = logits_of(expand(model, c, device=dev), (images, labels), batch_size, dev)
        s = _summary_cost(model, c, images.shape[1:])
        rows.append({"kind": kind, "label": label, "terms": k, "int_gemms": s["int_gemms"], "bops": s["bops"],
                     "bops_vs_fp": s["bops_vs_fp"], "weight_bits": s["weight_bits"],
                     "sqnr_db": to_db(rel_noise(fp_logits, lg)),
                     "agreement": 100 * (lg.argmax(1) == fp_logits.argmax(1)).float().mean().item(),
                     "top1": acc(lg), "fp_top1": acc(fp_logits), "n_images": len(images), "config": c.to_json()})
    if progress:
        progress(1.0, "done")
    return pd.DataFrame(rows)
