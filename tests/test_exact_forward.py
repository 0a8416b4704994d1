"""The exact-accumulator forward (fpxint/exact_forward.py): the blocks of kept pairs, and oneDNN's fast
path against the shared rescale. Bit-exactness against int64 and simulate == integer for every layer kind
and config are in tests/test_layers.py."""
import pytest
import torch
import torch.nn as nn

from fpxint import ExpansionConfig, exact_forward, expand_layer
from fpxint.layers import pair_matrix


def test_pair_groups_cover_every_kept_pair_once():
    """Full grid: one block; total order: one block per activation term with its own weight terms; a
    basis model's single pair: one block of one pair. Together exactly the nonzero entries of C."""
    full = pair_matrix(3, 2, "full", 0).tolist()
    assert exact_forward.pair_groups(full) == [([0, 1, 2], [0, 1])]
    tri = pair_matrix(3, 3, "total_order", 4).tolist()  # i + j <= 4 (1-based)
    assert exact_forward.pair_groups(tri) == [([0, 1, 2], [0]), ([0, 1], [1]), ([0], [2])]
    one = [[0, 0], [0, 1]]
    assert exact_forward.pair_groups(one) == [([1], [1])]
    for C in (full, tri, one):
        pairs = [(i, j) for rows, js in exact_forward.pair_groups(C) for i in rows for j in js]
        assert sorted(pairs) == [(i, j) for i in range(len(C)) for j in range(len(C[0])) if C[i][j]]


def test_integer_mode_off_the_onednn_epilogue_still_equals_simulate(monkeypatch):
    """Where oneDNN's scaled epilogue would round differently (a CPU using fused multiply-adds), integer
    mode takes oneDNN's unit-scale accumulators and the shared rescale: the same bits as simulate."""
    layer = expand_layer(nn.Conv2d(6, 10, 3, padding=1), ExpansionConfig(w_terms=3, a_terms=2))
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        y_sim = layer(x)
        layer.mode = "integer"
        monkeypatch.setattr(exact_forward, "onednn_epilogue_matches", lambda: False)
        assert exact_forward.onednn_forward(layer, x) is None and torch.equal(layer(x), y_sim)


def test_onednn_fast_path_equals_the_shared_rescale():
    """Where oneDNN's epilogue applies, its output equals `exact_forward` through every other kernel,
    bit for bit (the fast path is only taken where this holds; skipped on a CPU without it)."""
    from fpxint.onednn import onednn_epilogue_matches

    if not onednn_epilogue_matches():
        pytest.skip("oneDNN's epilogue is off on this CPU: the test above covers what runs instead")
    torch.manual_seed(5)
    for cfg in (ExpansionConfig(w_terms=3, a_terms=2), ExpansionConfig(w_terms=3, a_terms=3, truncation="total_order")):
        layer = expand_layer(nn.Conv2d(6, 10, 3, padding=1, bias=True), cfg)
        x = torch.randn(2, 6, 9, 9)
        with torch.no_grad():
            fast = exact_forward.onednn_forward(layer, x)
            assert fast is not None
            for kernel in ("int_mm", "float64"):
                assert torch.equal(fast, exact_forward.exact_forward(layer, x, kernel)), kernel
