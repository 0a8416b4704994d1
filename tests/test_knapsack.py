"""The multiple-choice knapsack (fpxint/allocation/knapsack.py): the DP is exact against brute force, both
solvers respect the cap, and the cost tables equal what fpxint.cost reports."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from fpxint import ExpansionConfig, LayerOverride
from fpxint.allocation.knapsack import COSTS, choices, noise_tables, solve_dp, solve_greedy
from fpxint.allocation.sensitivity import plan_layers
from fpxint.cost import choice_costs, cost_table, layer_macs


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(2, 3), st.integers(0, 10_000), st.floats(0.1, 1.0))
def test_dp_is_exact_and_greedy_feasible(n_layers, k, seed, frac):
    """Against brute force over every choice: DP finds the minimum, both respect the cap."""
    rng = np.random.default_rng(seed)
    grid = [[(w, a) for w in range(1, k + 1) for a in range(1, k + 1)]] * n_layers
    noise = [np.array([rng.uniform(0.1, 1) * 0.25 ** w + rng.uniform(0.1, 1) * 0.3 ** a for w, a in g]) for g in grid]
    integer = seed % 2 == 0  # GEMMs: pairs per layer; BOPs: pairs x the layer's MACs
    macs = [1.0 if integer else rng.uniform(1, 50) for _ in grid]
    costs = [np.array([w * a * m for w, a in g]) for g, m in zip(grid, macs)]
    cap = frac * sum(c.max() for c in costs)
    best = math.inf
    for pick in itertools.product(*[range(len(g)) for g in grid]):
        if sum(c[j] for c, j in zip(costs, pick)) <= cap + 1e-9:  # solve_dp's tolerance for a cap computed in floats
            best = min(best, sum(n[j] for n, j in zip(noise, pick)))
    more = solve_dp(grid, noise, costs, 1.3 * cap)
    for solve in (solve_dp, solve_greedy):
        choice = solve(grid, noise, costs, cap)
        if choice is None:
            assert best == math.inf
            continue
        idx = [g.index(c) for g, c in zip(grid, choice)]
        assert sum(c[j] for c, j in zip(costs, idx)) <= cap * (1 + 1e-9)
        total = sum(n[j] for n, j in zip(noise, idx))
        if solve is solve_dp and integer:  # exact on integer costs
            assert total == pytest.approx(best)
        if solve is solve_dp:  # more budget never predicts more error
            assert sum(n[g.index(c)] for n, g, c in zip(noise, grid, more)) <= total + 1e-12


# ----- the tables the solvers take ------------------------------------------------------------------------
def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(36, 5)).eval()


@pytest.mark.parametrize("cfg", [ExpansionConfig(truncation="total_order", w_bits=3, a_bits=8, first_last="8bit"),
                                 ExpansionConfig(truncation="weight_only", w_granularity="per_tensor")],
                         ids=lambda c: c.label())
def test_choice_costs_equal_what_fpxint_cost_counts(cfg):
    """Every (weight terms, activation terms) choice of every layer costs what cost_table says for a config
    that gives each layer that choice: the solver and the reported cost cannot disagree."""
    model, k = _net(), 2
    _, plan = plan_layers(model, cfg)
    costs = choice_costs(cfg, plan, layer_macs(model, (3, 5, 5)), k)  # the solver's cost arrays
    for w in range(1, k + 1):
        for a in range(1, k + 1):
            ovs = {name: LayerOverride(w_bits=spec.w_bits, w_terms=w, a_bits=spec.a_bits, a_terms=a)
                   for _, name, _, spec in plan}
            t = cost_table(model, cfg.replace(overrides=ovs), (3, 5, 5)).set_index("layer")
            for i, (_, name, _, _) in enumerate(plan):
                for c in COSTS:
                    assert costs[c][i, w - 1, a - 1] == t.loc[name, c], (c, name, w, a)


def test_noise_tables_are_non_increasing_and_need_every_term():
    plan = [(0, "a", None, None), (1, "b", None, None)]
    sens = pd.DataFrame([("a", "weight", 1, 4.0), ("a", "weight", 2, 1.0), ("a", "weight", 3, 2.0),  # noisy rise
                         ("b", "weight", 1, 9.0), ("b", "weight", 2, 3.0), ("b", "weight", 3, 1.0)],
                        columns=["layer", "side", "terms", "noise"])
    nw, na = noise_tables(sens, plan, 3)
    assert nw.tolist() == [[4.0, 1.0, 1.0], [9.0, 3.0, 1.0]] and not na.any()  # activations not measured: zeros
    with pytest.raises(ValueError, match="max_terms is 4"):
        noise_tables(sens, plan, 4)


def test_choices_pin_activation_terms_when_asked():
    nw, na = np.array([[3.0, 1.0]]), np.array([[5.0, 2.0]])
    cost = np.arange(4.0).reshape(1, 2, 2)
    grid, noise, costs = choices(nw, na, cost, None)
    assert grid == [[(1, 1), (1, 2), (2, 1), (2, 2)]] and noise[0].tolist() == [8.0, 5.0, 6.0, 3.0]
    assert costs[0].tolist() == [0.0, 1.0, 2.0, 3.0]
    grid, noise, costs = choices(nw, na, cost, [2])
    assert grid == [[(1, 2), (2, 2)]] and noise[0].tolist() == [3.0, 1.0] and costs[0].tolist() == [1.0, 3.0]
