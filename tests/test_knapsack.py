"""The multiple-choice knapsack (fpxint/allocation/knapsack.py): the DP is exact against brute force, both
solvers respect the cap."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fpxint.allocation.knapsack import solve_dp, solve_greedy


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
        if sum(c[j] for c, j in zip(costs, pick)) <= cap:
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
