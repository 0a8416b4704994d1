"""Integer kernels: exact against int64 on adversarial operands up to the int32 bound and past it (split K),
every kernel path (oneDNN, CPU `_int_mm`, the CUDA path's padded shapes run through the CPU kernel, "float",
float64) equal."""
import itertools

import pytest
import torch
import torch.nn as nn

from fpxint import ExpansionConfig, expand_layer
from fpxint.intbounds import INT32_MAX, int32_chunk
from fpxint.intops import KERNELS, conv_terms, int_matmul, linear_terms, resolve_kernel
from fpxint.intref import int64_conv_reference, int64_linear_reference


@pytest.mark.parametrize("kernel", ["int_mm", "int_mm_cuda"])
@pytest.mark.parametrize("a_val,b_val", [(-128, -128), (127, 127), (-128, 127), (127, -128)])
def test_int_mm_adversarial_constants_up_to_the_int32_limit(kernel, a_val, b_val):
    """All-extreme operands: the largest sums one int32 accumulator may hold; no 16-bit saturation."""
    k = int32_chunk(128, 128)  # 131071 products of 128 * 128 = 2**31 - 2**14
    a = torch.full((20, k), a_val, dtype=torch.int8)
    b = torch.full((k, 9), b_val, dtype=torch.int8)
    got = int_matmul(a, b, 128, 128, kernel)
    # the CUDA rules pad K to 131072 and cut chunks at multiples of 8: two chunks summed in int64
    assert got.dtype == (torch.int32 if kernel == "int_mm" else torch.int64)
    assert torch.equal(got.to(torch.int64), int64_linear_reference(a, b.t()))


@pytest.mark.parametrize("kernel", ["int_mm", "int_mm_cuda"])
def test_split_k_beyond_the_int32_bound(kernel):
    """K past the bound: chunks of int32 summed in int64; one unsplit int32 GEMM would wrap."""
    k = int32_chunk(128, 128) + 1000
    a = torch.full((17, k), -128, dtype=torch.int8)
    b = torch.full((k, 8), -128, dtype=torch.int8)
    got = int_matmul(a, b, 128, 128, kernel)
    ref = int64_linear_reference(a, b.t())
    assert got.dtype == torch.int64 and torch.equal(got, ref) and int(ref[0, 0]) > INT32_MAX


@pytest.mark.parametrize("kernel", ["int_mm", "int_mm_cuda"])
def test_int_mm_adversarial_patterns_and_odd_shapes(kernel):
    """Pairs of extremes side by side (what a u8 x s8 16-bit pair sum would saturate on), every shape
    remainder the CUDA rules pad (M <= 16, K and N not multiples of 8)."""
    g = torch.Generator().manual_seed(0)
    pattern = torch.tensor([127, 127, -128, -128, -128, 127, 127, -128], dtype=torch.int8)
    for m, k, n in [(1, 8, 8), (5, 13, 3), (16, 17, 9), (33, 4096, 24), (64, 1000, 1)]:
        a = pattern.repeat(m, k // 8 + 1)[:, :k].contiguous()
        b = pattern.flip(0).repeat(k // 8 + 1)[:k].unsqueeze(1).repeat(1, n)
        rnd = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
        for x in (a, rnd):
            got = int_matmul(x, b, 128, 128, kernel)
            assert got.shape == (m, n) and torch.equal(got.to(torch.int64), int64_linear_reference(x, b.t()))


def test_kernel_names_are_checked():
    assert resolve_kernel("auto", torch.device("cpu")) == "onednn"
    assert resolve_kernel("auto", torch.device("cuda", 0)) == "int_mm_cuda"
    with pytest.raises(ValueError, match="int_mm_cuda"):
        resolve_kernel("int4", torch.device("cpu"))
    with pytest.raises(ValueError, match="CPU only"):
        resolve_kernel("onednn", torch.device("cuda", 0))
    assert set(KERNELS) == {"auto", "onednn", "int_mm", "int_mm_cuda", "float", "float64"}


CONV_CASES = [  # (dim, weight shape, input shape, stride, padding, dilation, groups)
    (2, (16, 3, 3, 3), (2, 3, 15, 13), 2, 1, 1, 1),
    (2, (8, 4, 3, 1), (2, 4, 10, 10), 1, "valid", 1, 1),
    (2, (12, 8, 3, 3), (2, 8, 11, 11), 1, 2, 2, 1),
    (2, (8, 8, 1, 1), (3, 8, 5, 7), 1, 0, 1, 1),
    (2, (12, 2, 3, 3), (2, 8, 11, 11), 1, 2, 2, 4),
    (2, (16, 1, 3, 3), (2, 16, 9, 9), 1, 1, 1, 16),
    (1, (12, 8, 5), (3, 8, 31), 2, 2, 1, 1),
    (1, (6, 6, 4), (2, 6, 17), 1, "same", 2, 1),
]


@pytest.mark.parametrize("kernel", ["onednn", "int_mm", "int_mm_cuda", "float", "float64"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"d{c[0]}w{c[1]}g{c[6]}p{c[4]}")
@pytest.mark.parametrize("extreme", [False, True])
def test_conv_terms_equal_int64_for_every_pair(case, kernel, extreme):
    """Two activation terms x three weight terms in one call; each accumulator equals int64."""
    dim, wshape, xshape, stride, padding, dilation, groups = case
    g = torch.Generator().manual_seed(1)
    if extreme:
        xq = torch.full((2, *xshape), -128, dtype=torch.int8)
        wq = torch.full((3, *wshape), -128, dtype=torch.int8)
        xq[1], wq[1] = 127, 127
    else:
        xq = torch.randint(-128, 128, (2, *xshape), generator=g, dtype=torch.int8)
        wq = torch.randint(-128, 128, (3, *wshape), generator=g, dtype=torch.int8)
    channels_last = xq.reshape(-1, *xshape[1:]).contiguous(memory_format=torch.channels_last) if dim == 2 else None
    inputs = [xq] + ([channels_last.reshape(xq.shape)] if channels_last is not None else [])
    for x in inputs:
        got = conv_terms(x, wq, dim, stride, padding, dilation, groups, 128, 128, kernel)
        for j, i in itertools.product(range(2), range(3)):
            ref = int64_conv_reference(xq[j], wq[i], dim, stride, padding, dilation, groups)
            # integer dtypes, or float32 on oneDNN's path (exact: every |acc| < 2**24 there); "float" (simulate
            # mode) keeps the float32 result of a float convolution whose partial sums are integers below 2**24
            assert got.dtype in (torch.int32, torch.int64) or (kernel in ("onednn", "float")
                                                               and got.dtype == torch.float32)
            assert torch.equal(got[j, i].to(torch.int64), ref), (j, i)


@pytest.mark.parametrize("kernel", ["int_mm", "int_mm_cuda", "float", "float64"])
@pytest.mark.parametrize("k", [40, 1100])
def test_linear_terms_equal_int64(kernel, k):
    """K = 1100 at 8 bits: 1100 * 128 * 128 > 2**24, so the "float" kernel must take float64; the planted
    row gives an odd accumulator above 2**24 (127 * 127 + 1099 * 127 * 128), which float32 cannot hold."""
    g = torch.Generator().manual_seed(2)
    xq = torch.randint(-128, 128, (2, 3, 5, k), generator=g, dtype=torch.int8)
    wq = torch.randint(-128, 128, (2, 7, k), generator=g, dtype=torch.int8)
    xq[0, 0, 0], wq[0, 0] = -128, -127
    xq[0, 0, 0, 0] = -127
    got = linear_terms(xq, wq, 128, 128, kernel)
    if kernel == "float":
        assert got.dtype == (torch.float32 if k == 40 else torch.float64)
    for j, i in itertools.product(range(2), range(2)):
        assert torch.equal(got[j, i].to(torch.int64), int64_linear_reference(xq[j], wq[i]))


@pytest.mark.parametrize("kernel", ["onednn", "int_mm", "int_mm_cuda", "float", "float64"])
@pytest.mark.parametrize("cfg", [ExpansionConfig(w_bits=8, w_terms=2, a_bits=8, a_terms=2, w_grid="full", a_grid="full"),
                                 ExpansionConfig(w_bits=8, w_terms=1, a_bits=7, a_terms=2, a_grid="asymmetric"),
                                 ExpansionConfig(w_bits=8, w_terms=2, a_bits=8, a_terms=1, a_grid="asymmetric"),
                                 ExpansionConfig(w_terms=3, a_terms=3, truncation="total_order")],
                         ids=["full8", "asym7", "asym8_offsets", "total_order"])
def test_layer_kernels_agree_with_each_other_and_int64(kernel, cfg):
    """The layer's accumulators through each kernel, including operands out of int8's range
    (asymmetric 8-bit: centered terms up to 255, int8 terms plus offsets)."""
    torch.manual_seed(3)
    for m, shape in [(nn.Conv2d(6, 10, 3, padding=1), (2, 6, 9, 9)), (nn.Linear(24, 10), (4, 24))]:
        layer = expand_layer(m, cfg)
        x = torch.randn(shape)
        x[0, 0] = 40.0  # an outlier: the largest terms sit at the grid's ends
        xterms = layer.activation_terms(x)
        with torch.no_grad():
            accs = layer.integer_accumulators(x, kernel=kernel)
        for (i, j), (acc, _) in accs.items():
            xq, wq = xterms[j][0].round().to(torch.int64), layer.w_centered(i).to(torch.int64)
            ref = (int64_conv_reference(xq, wq, 2, 1, 1, 1, 1) if isinstance(m, nn.Conv2d)
                   else int64_linear_reference(xq, wq)) * int(layer.pairs[i, j])
            assert torch.equal(acc.to(torch.int64), ref), (i, j)


def _offsets(j: int, n: int, g: torch.Generator, extreme: bool) -> torch.Tensor:
    """Per (term, image) offsets c in [-127, 128] (8-bit asymmetric: c = 128 - z, z in [0, 255])."""
    if extreme:
        return torch.tensor([[[128, -127, 0][(a + b) % 3] for b in range(n)] for a in range(j)])
    return torch.randint(-127, 129, (j, n), generator=g)


@pytest.mark.parametrize("kernel", ["onednn", "int_mm", "int_mm_cuda", "float", "float64"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"d{c[0]}w{c[1]}g{c[6]}p{c[4]}")
@pytest.mark.parametrize("extreme", [False, True])
def test_conv_offsets_give_the_int64_accumulators_of_the_shifted_terms(case, kernel, extreme):
    """Terms u + c (u int8, c per term and image: 8-bit asymmetric terms reach 255): acc(u) + c S equals the
    int64 convolution of u + c with zero padding, on every kernel, as integers."""
    dim, wshape, xshape, stride, padding, dilation, groups = case
    g = torch.Generator().manual_seed(7)
    if extreme:
        xq = torch.where(torch.rand((2, *xshape), generator=g) < 0.5, -128, 127).to(torch.int8)
        wq = torch.where(torch.rand((3, *wshape), generator=g) < 0.5, -128, 127).to(torch.int8)
    else:
        xq = torch.randint(-128, 128, (2, *xshape), generator=g, dtype=torch.int8)
        wq = torch.randint(-128, 128, (3, *wshape), generator=g, dtype=torch.int8)
    c = _offsets(2, xshape[0], g, extreme)
    shape = (2, xshape[0]) + (1,) * (len(xshape) - 1)
    got = conv_terms(xq, wq, dim, stride, padding, dilation, groups, 128, 128, kernel, {}, c.reshape(shape))
    assert not got.is_floating_point() or got.dtype == torch.float32  # float32 only below 2**24: exact
    for j, i in itertools.product(range(2), range(3)):
        want = int64_conv_reference(xq[j].long() + c[j].reshape(-1, *(1,) * (len(xshape) - 1)), wq[i],
                                    dim, stride, padding, dilation, groups)
        assert torch.equal(got[j, i].to(torch.int64), want), (j, i)


@pytest.mark.parametrize("kernel", ["onednn", "int_mm", "int_mm_cuda", "float", "float64"])
@pytest.mark.parametrize("k", [40, 70000])
def test_linear_offsets_give_the_int64_accumulators_of_the_shifted_terms(kernel, k):
    """Per-row offsets (per token): the row sums of the weights carry c. K = 70,000: K * 256 * 128 passes
    int32's bound, so the accumulators come back as int64 (all-ends operands reach it)."""
    g = torch.Generator().manual_seed(8)
    xq = torch.where(torch.rand((2, 3, 4, k), generator=g) < 0.5, -128, 127).to(torch.int8)
    wq = torch.where(torch.rand((2, 5, k), generator=g) < 0.5, -128, 127).to(torch.int8)
    c = _offsets(2, 12, g, True).reshape(2, 3, 4, 1)
    got = linear_terms(xq, wq, 128, 128, kernel, c)
    assert got.dtype == torch.int64 if k * 256 * 128 > INT32_MAX else got.dtype in (torch.float32, torch.int32)
    for j, i in itertools.product(range(2), range(2)):
        assert torch.equal(got[j, i].to(torch.int64), int64_linear_reference(xq[j].long() + c[j], wq[i]))


def test_offset_layers_shared_by_threads_with_different_input_shapes():
    """A server's threads may share an expanded layer: inputs of different sizes at once (the window sums
    are kept for one shape at a time) give each thread what it gets alone, bit for bit."""
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(10)
    cfg = ExpansionConfig(w_bits=8, w_terms=1, a_bits=8, a_terms=2, mode="integer")  # asymmetric: offsets
    layer = expand_layer(nn.Conv2d(4, 8, 3, padding=1), cfg)
    layer.int_kernel = "int_mm"  # the unfused path: acc(u) + c S
    xs = [torch.randn(2, 4, 6 + k, 6 + k) for k in range(4)]
    with torch.no_grad():
        alone = [layer(x) for x in xs]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda i: layer(xs[i % 4]), range(200)))
    assert all(torch.equal(y, alone[i % 4]) for i, y in enumerate(got))
