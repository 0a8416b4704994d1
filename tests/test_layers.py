"""Layer level: integer mode bit-exact vs an int64 reference, simulate == integer, cross-term rules."""
import itertools

import pytest
import torch
import torch.nn as nn

from fpxint import ExpansionConfig, expand_layer
from fpxint.intref import int64_conv_reference, int64_linear_reference
from fpxint.layers import pair_matrix

torch.manual_seed(0)

LAYERS = [
    ("linear", lambda: nn.Linear(48, 24), (6, 48)),
    ("linear3d", lambda: nn.Linear(32, 16, bias=False), (3, 5, 32)),
    ("conv1d", lambda: nn.Conv1d(8, 12, 5, stride=2, padding=2, dilation=1), (3, 8, 31)),
    ("conv1d_same", lambda: nn.Conv1d(6, 6, 4, padding="same", dilation=2), (2, 6, 17)),
    ("conv2d", lambda: nn.Conv2d(3, 16, 3, stride=2, padding=1), (2, 3, 15, 13)),
    ("conv2d_dw", lambda: nn.Conv2d(16, 16, 3, padding=1, groups=16), (2, 16, 9, 9)),
    ("conv2d_groups_dil", lambda: nn.Conv2d(8, 12, 3, padding=2, dilation=2, groups=4), (2, 8, 11, 11)),
    ("conv2d_reflect", lambda: nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect"), (2, 4, 10, 10)),
    ("conv2d_circular", lambda: nn.Conv2d(4, 8, 3, padding=1, padding_mode="circular"), (2, 4, 10, 10)),
    ("conv2d_valid", lambda: nn.Conv2d(4, 8, (3, 1), padding="valid"), (2, 4, 10, 10)),
]
CONFIGS = [  # the default (asymmetric activations) and the symmetric activation grid, pinned
    ExpansionConfig(),
    ExpansionConfig(w_bits=3, w_terms=3, a_bits=2, a_terms=3, truncation="total_order", a_grid="symmetric"),
    ExpansionConfig(w_bits=8, w_terms=1, a_bits=8, a_terms=1, a_granularity="per_tensor", a_grid="symmetric"),
    ExpansionConfig(w_bits=4, w_terms=2, a_bits=4, a_terms=2, w_grid="asymmetric", a_grid="asymmetric"),
    ExpansionConfig(w_bits=1, w_terms=4, a_bits=3, a_terms=2, w_granularity="per_tensor", a_granularity="per_token",
                    a_grid="symmetric"),
    ExpansionConfig(w_bits=8, w_terms=1, a_bits=8, a_terms=2),  # default grid at 8 bits: centered terms reach 255
    ExpansionConfig(w_bits=8, w_terms=2, a_bits=8, a_terms=2, a_grid="auto"),  # 8-bit auto: signed rows, offsets 0
    ExpansionConfig(w_bits=2, w_terms=2, a_bits=8, a_terms=2, w_grid="full", a_grid="full", scale_rule="mse"),
]


def _int64_reference(layer, x):
    """sum over kept pairs of s_i t_j (Qw_i * Qx_j), every integer product accumulated in int64."""
    x = layer.prepared_input(x)
    xterms = layer.activation_terms(x)
    accs = {}
    for i, j in itertools.product(range(layer.pairs.shape[0]), range(layer.pairs.shape[1])):
        if not layer.pairs[i, j]:
            continue
        xq, wq = xterms[j][0].round().to(torch.int64), layer.w_centered(i).to(torch.int64)
        if isinstance(layer, nn.Module) and hasattr(layer, "kernel_size"):
            acc = int64_conv_reference(xq, wq, layer.dim, layer.stride, layer.padding, layer.dilation, layer.groups)
        else:
            acc = int64_linear_reference(xq, wq)
        accs[(i, j)] = acc * int(layer.pairs[i, j])
    return accs


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.label() + f" {c.w_grid} {c.scale_rule}")
@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[l[0] for l in LAYERS])
def test_integer_mode_bit_exact_and_equal_to_simulate(name, make, shape, cfg):
    m = make()
    x = torch.randn(shape)
    layer = expand_layer(m, cfg)
    with torch.no_grad():
        ref = _int64_reference(layer, x)
        got = layer.integer_accumulators(layer.prepared_input(x))
        assert set(got) == set(ref) and len(got) == int(layer.pairs.count_nonzero())
        for key, (acc, _) in got.items():
            assert not acc.is_floating_point()
            assert torch.equal(acc.to(torch.int64), ref[key]), key  # bit-exact integer accumulation
        y_sim = layer(x)
        layer.mode = "integer"
        y_int = layer(x)
        y_kernels = []
        for kernel in ("int_mm", "float64"):
            layer.int_kernel = kernel
            y_kernels.append(layer(x))
    assert y_sim.shape == m(x).shape
    # simulate computes the same exact accumulators with float ops and rescales them with the same float
    # ops in the same order: bit for bit equal to integer mode on every kernel
    assert torch.equal(y_sim, y_int) and all(torch.equal(y_sim, y) for y in y_kernels)


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[l[0] for l in LAYERS])
def test_error_shrinks_with_terms_and_sqnr_floor(name, make, shape):
    m = make()
    x = torch.randn(shape)
    with torch.no_grad():
        y = m(x)
        errs = []
        for k in (1, 2, 3, 4):
            layer = expand_layer(m, ExpansionConfig(w_bits=4, w_terms=k, a_bits=4, a_terms=k))
            errs.append(((layer(x) - y).norm() / y.norm()).item())
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    assert errs[2] < 2e-3  # 3 terms of 4 bits: SQNR above ~54 dB on random data


def test_error_decomposes_by_term_pair():
    """Y - sum_kept s_i t_j Qw_i*Qx_j is exactly the part carried by the dropped pairs and residuals."""
    m = nn.Linear(64, 32, bias=False)
    x = torch.randn(8, 64)
    full = expand_layer(m, ExpansionConfig(w_terms=3, a_terms=3))
    tot = expand_layer(m, ExpansionConfig(w_terms=3, a_terms=3, truncation="total_order"))
    with torch.no_grad():
        accs = full.integer_accumulators(x)
        contrib = {k: (a * s.double()).float() for k, (a, s) in accs.items()}
        assert torch.allclose(sum(contrib.values()), full(x), atol=1e-5)
        kept = sum(v for (i, j), v in contrib.items() if i + j + 2 <= 4)
        assert torch.allclose(kept, tot(x), atol=1e-5)
        # dropped pairs are of order r_w^(i-1) r_a^(j-1): (3,3) is far below (1,1)
        assert contrib[(2, 2)].norm() < 1e-3 * contrib[(0, 0)].norm()


def test_pair_matrix_rules():
    assert pair_matrix(2, 3, "full", 4).sum() == 6
    assert pair_matrix(3, 3, "total_order", 4).tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]


def test_weight_only_and_tensor_level_keep_fp_activations():
    m = nn.Conv2d(3, 8, 3)
    x = torch.randn(2, 3, 8, 8)
    for cfg in (ExpansionConfig(truncation="weight_only"), ExpansionConfig(level="tensor")):
        layer = expand_layer(m, cfg)
        with torch.no_grad():
            assert torch.allclose(layer(x), nn.functional.conv2d(x, layer.weight, layer.bias), atol=1e-6)
        layer.mode = "integer"
        with pytest.raises(ValueError, match="simulate"):
            layer(x)


def test_model_level_is_term_parallel_and_equal():
    m = nn.Conv2d(4, 8, 3, padding=1)
    x = torch.randn(2, 4, 8, 8)
    a = expand_layer(m, ExpansionConfig(level="layer"))
    b = expand_layer(m, ExpansionConfig(level="model"))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_unsupported_layer():
    with pytest.raises(ValueError, match="supported layer types: Linear, Conv1d, Conv2d"):
        expand_layer(nn.Conv3d(2, 2, 3), ExpansionConfig())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["simulate", "integer"])
@pytest.mark.parametrize("make, shape", [(lambda: nn.Linear(24, 10), (5, 24)),
                                         (lambda: nn.Conv2d(4, 6, 3, padding=1), (2, 4, 7, 7))])
def test_half_precision_layers_compute_in_float32_and_cast_back(dtype, mode, make, shape):
    """An fp16 / bf16 layer equals the float32 expansion of the same (upcast) weights on the upcast
    input, rounded once to the layer's dtype at the end: the series runs in float32 inside."""
    torch.manual_seed(0)
    m = make().to(dtype)
    x = torch.randn(shape).to(dtype)
    cfg = ExpansionConfig(w_bits=4, w_terms=3, a_bits=4, a_terms=2, mode=mode)
    q = expand_layer(m, cfg)
    ref = expand_layer(_upcast(m), cfg)
    with torch.no_grad():
        y = q(x)
        assert y.dtype == dtype
        assert torch.equal(y, ref(x.float()).to(dtype))


def _upcast(m):
    import copy

    return copy.deepcopy(m).float()
