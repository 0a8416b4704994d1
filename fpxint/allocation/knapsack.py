"""Beyond the paper, part 2: the allocation problem as a multiple-choice knapsack.

Each expanded layer picks one (weight terms, activation terms) pair; each pair has a predicted
noise (from `fpxint.allocation.sensitivity`, summed over layers under the additive noise model) and a cost as
`fpxint.cost` counts it. `solve_dp` finds the minimum total noise under a cost cap exactly (integer
costs; real costs rounded UP to a grid of cap / 2000, so a solution never breaks the cap);
`solve_greedy` adds one term at a time, best noise cut per unit cost first. numpy and pandas only:
the costs come in as arrays (`fpxint.cost.choice_costs`, the one cost formula), so no torch here.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

COSTS = ("int_gemms", "bops", "weight_bits")
_DP_BINS = 2000  # cost resolution of the knapsack for non-integer costs


def noise_tables(sens: pd.DataFrame, plan, max_terms: int) -> tuple[np.ndarray, np.ndarray]:
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


def choices(nw, na, cost, fixed_a: list[int] | None):
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


def solve_dp(grid, noise, costs, cap: float) -> list[tuple[int, int]] | None:
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


def solve_greedy(grid, noise, costs, cap: float) -> list[tuple[int, int]] | None:
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
