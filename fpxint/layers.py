"""Layer level: expanded Linear / Conv1d / Conv2d.

A linear layer is bilinear in weight and input, so with W = sum_i s_i Qw_i and X = sum_j t_j Qx_j

    Y = sum_(i,j) C_ij * s_i t_j (Qw_i * Qx_j) + b

where `C` (the `pairs` buffer, integers) says which cross terms are kept: all ones for the full
grid, i + j <= K for the total order, a single 1 for a basis model. The weights are expanded once
at construction; the input is expanded at run time from the actual input (calibration-free).

Execution modes (docs/method.md, "Execution modes"):
- simulate: float ops on the integer values. Each kept pair's accumulator Qw_i * Qx_j is computed by
  a float convolution / GEMM of the integer terms (all pairs of a layer in one op: weight terms
  stacked along the output channels, activation terms along the batch), float32 while
  K * max|Qw| * max|Qx| < 2**24 on the CPU, else float64 (exact below 2**53): every partial sum is an
  integer the float holds exactly, so the accumulators do not depend on the op's summation order,
  which changes with the batch size. The rescale y = b + sum_j t_j sum_i C_ij s_i acc_ij is
  element-wise. Hence an image's output does not depend on its batch mates (with per-sample or
  per-token activation scales) and simulate equals integer mode bit for bit. Layers whose input stays
  FP (level "tensor", truncation "weight_only") run one float op with W_hat = sum_i s_i Qw_i, as the
  FP layer does, with its float summation order. Level "model" is the same function as "layer".
- integer: each kept pair is an exact integer GEMM / convolution on int8 units (`intops`), then the
  same rescale (`exact_forward`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ExpansionConfig, LayerSpec
from .exact_forward import exact_forward, integer_accumulators, onednn_forward
from .intbounds import int8_units_apply, max_abs_int, offset_form
from .intops import conv_terms, linear_terms, resolve_kernel
from .series import centered_term, expand_tensor_fused  # the C kernel: bit-identical to the eager series


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for fp16 / bf16 models: the series' scales are float32 (a W8 residual of 2^-14 relative
    is below bf16's 2^-8 resolution and near fp16's), and an integer term times its scale must not
    round to the low-precision grid before the terms are summed. float32 / float64 models keep theirs."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def pair_matrix(n_w: int, n_a: int, truncation: str, order: int) -> torch.Tensor:
    """The kept cross terms C[i, j] (0-based) for a truncation rule."""
    i = torch.arange(1, n_w + 1).unsqueeze(1)
    j = torch.arange(1, n_a + 1).unsqueeze(0)
    if truncation == "total_order":
        return ((i + j) <= order).to(torch.int64)
    return torch.ones(n_w, n_a, dtype=torch.int64)


class ExpandedLayer(nn.Module):
    """Base class; subclasses define the float op and the exact integer op."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, spec: LayerSpec,
                 cfg: ExpansionConfig):
        super().__init__()
        ws = expand_tensor_fused(weight.detach(), spec.w_bits, spec.w_terms, cfg.w_granularity, cfg.w_grid,
                           cfg.scale_rule)
        self.register_buffer("w_q", ws.q)
        self.register_buffer("w_scale", ws.scales)
        self.register_buffer("w_zero", ws.zero_points)
        self.register_buffer("bias", None if bias is None else bias.detach().to(_compute_dtype(bias.dtype), copy=True))
        self.w_bits, self.w_terms, self.w_grid = spec.w_bits, spec.w_terms, cfg.w_grid
        self.w_granularity = cfg.w_granularity
        self.act_fp = not cfg.expands_activations
        self.a_bits, self.a_grid = spec.a_bits, cfg.a_grid
        self.a_terms = 1 if self.act_fp else spec.a_terms  # FP input counts as one "term"
        self.a_granularity = cfg.a_granularity
        self.scale_rule = cfg.scale_rule
        self.mode = cfg.mode
        self.int_kernel = "auto"  # integer mode's GEMM path, see intops.KERNELS
        self.term_parallel = cfg.level == "model"
        self.truncation = "full" if self.act_fp else cfg.truncation
        self.register_buffer("pairs", pair_matrix(self.w_terms, self.a_terms, self.truncation, cfg.total_order))
        self._pairs_seen: tuple = (None, -1, [])
        self._w_cache: dict = {}

    # ----- weights -------------------------------------------------------------------------
    def _w_shape(self) -> tuple[int, ...]:
        return (-1,) + (1,) * (self.w_q.dim() - 2) if self.w_granularity == "per_channel" else (1,) * (self.w_q.dim() - 1)

    def w_centered(self, i: int) -> torch.Tensor:
        """Weight term i (0-based) as signed integers (`series.centered_term`)."""
        return centered_term(self.w_q[i], None if self.w_zero is None else self.w_zero[i], self._w_shape())

    def w_scale_b(self, i: int) -> torch.Tensor:
        return self.w_scale[i].reshape(self._w_shape())

    def weight_terms_sum(self, coeffs: tuple[int, ...]) -> torch.Tensor:
        """sum_i coeffs[i] s_i Qw_i as a float weight, cached (weights never change after expansion)."""
        key = (coeffs, self.w_q.device)
        if key not in self._w_cache:  # float32 at least, also after a .half() of the expanded model
            w = torch.zeros(self.w_q.shape[1:], dtype=_compute_dtype(self.w_scale.dtype), device=self.w_q.device)
            for i, c in enumerate(coeffs):
                if c:
                    w += c * self.w_centered(i).to(w.dtype) * self.w_scale_b(i)
            self._w_cache[key] = w
        return self._w_cache[key]

    @property
    def weight(self) -> torch.Tensor:
        """The expanded weight sum_i s_i Qw_i (all terms), for code that reads `.weight`."""
        return self.weight_terms_sum((1,) * self.w_terms)

    def __getstate__(self):
        # caches are derived from the buffers; oneDNN's packed weights can be neither copied nor pickled
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {**state, "_w_cache": {}, "_pairs_seen": (None, -1, [])}

    def _apply(self, fn, *args, **kwargs):
        self._w_cache = {}  # device / dtype moves invalidate cached float weights
        return super()._apply(fn, *args, **kwargs)

    # ----- activations ---------------------------------------------------------------------
    def _a_granularity(self) -> str:
        return self.a_granularity

    def _a_scale_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        g = self._a_granularity()
        if g == "per_tensor":
            return (1,) * x.dim()
        if g == "per_token":
            return (*x.shape[:-1], 1)
        return (x.shape[0],) + (1,) * (x.dim() - 1)

    def prepared_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the series sees it: `x` with a non-zero padding mode (reflect, circular) applied, else
        `x` itself; what `activation_terms` and `integer_accumulators` take."""
        return self._pre(x)

    def activation_terms(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Run-time series of the input (`prepared_input(x)`): [(centered integers as float, broadcast scale), ...]."""
        ts = expand_tensor_fused(x, self.a_bits, self.a_terms, self._a_granularity(), self.a_grid, self.scale_rule)
        shape = self._a_scale_shape(x)
        return [(ts.centered(k).to(x.dtype), ts.scales[k].reshape(shape)) for k in range(self.a_terms)]

    # ----- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = self._pre(x).to(_compute_dtype(dtype))  # fp16 / bf16 inputs: float32 inside, cast back below
        if self.mode != "integer":
            return self._simulate_forward(x).to(dtype)  # adds the bias inside its first float op
        return self._integer_forward(x).to(dtype)  # adds the bias in its first rescale

    def _simulate_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.act_fp:  # exact accumulators, the integer mode's rescale: batch-independent. Every kernel
            # gives the same bits here, so simulate takes the fastest: int8 units wherever the terms fit int8,
            # directly or as int8 plus offsets (8-bit asymmetric / auto; 2-4x faster on this CPU than float ops), else
            # float ops on the integers (float32 below 2**24)
            if int8_units_apply(max_abs_int(self.w_bits, self.w_grid), max_abs_int(self.a_bits, self.a_grid)):
                return self._integer_forward(x)
            return exact_forward(self, x, "float")
        # FP activations (level "tensor", weight_only): one float op per distinct row of C, as in FP
        C = self.pairs
        if self.term_parallel:  # level "model": every kept weight term runs on its own
            y = None
            for i in range(C.shape[0]):
                if C[i, 0]:
                    e = tuple(int(k == i) for k in range(C.shape[0]))
                    t = int(C[i, 0]) * self._op(x, self.weight_terms_sum(e))
                    y = t if y is None else y + t
            y = y if y is not None else self._zero_out(x)
            return y + self.bias.reshape(self._bias_shape(y)) if self.bias is not None else y
        groups: dict[int, list[int]] = {}  # weight terms with equal coefficients share one float op
        for i in range(C.shape[0]):
            if int(C[i, 0]):
                groups.setdefault(int(C[i, 0]), []).append(i)
        y = None
        for c, idx in groups.items():
            wc = tuple(int(k in idx) for k in range(C.shape[0]))
            xr = x if c == 1 else x * c
            t = self._op(xr, self.weight_terms_sum(wc), self.bias.to(xr.dtype) if y is None and self.bias is not None
                         else None)
            y = t if y is None else y + t
        if y is None:
            y = self._zero_out(x)
            y = y + self.bias.reshape(self._bias_shape(y)) if self.bias is not None else y
        return y

    def activation_int_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The input's series as integers: (terms [J, *x.shape], offsets or None, scales [J, *scale shape]).

        The same terms as `activation_terms` (the fused kernel is bit-identical to the eager series),
        centered, as int8. 8-bit asymmetric / auto terms reach 255, one bit past int8: they come as
        u = q - 128 (int8) with per-row offsets c (int16, the scales' shape), the term being u + c
        (asymmetric: c = 128 - z; auto: c = 128 on unsigned rows that use the top half, else 0), which
        `intops` turns into acc(u) + c S on the int8 units. A channels-last convolution input is expanded
        in its memory order (max / fixed rules: per-element results do not depend on it), so the terms
        come out channels-last, the layout im2col reads.
        """
        g = self._a_granularity()
        nhwc = (x.dim() == 4 and self.scale_rule != "mse" and isinstance(self, _ExpandedConv)
                and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        view = x.permute(0, 2, 3, 1) if nhwc else x.contiguous()
        ts = expand_tensor_fused(view, self.a_bits, self.a_terms, g, self.a_grid, self.scale_rule)
        bshape = (self.a_terms, *self._a_scale_shape(view))
        wide = max_abs_int(self.a_bits, self.a_grid)
        z = None if ts.zero_points is None else ts.zero_points.reshape(bshape).to(torch.int16)
        shift, offset = z, None  # term = (q - shift) + offset
        if offset_form(wide) and z is not None:  # 8-bit asymmetric: q - 128 fits int8; offset 128 - z
            shift, offset = 128, 128 - z
        elif offset_form(wide):  # 8-bit auto: rows with a level above 127 are unsigned; shift them by 128
            dims = [d for d in range(1, ts.q.dim()) if bshape[d] == 1]
            shift = offset = torch.where(ts.q.amax(dim=dims, keepdim=True) > 127, 128, 0).to(torch.int16)
        if isinstance(shift, int) and ts.q.dtype == torch.uint8:  # q - 128 in one pass: flip the top bit
            q = ts.q.bitwise_xor(128).view(torch.int8)
        else:
            q = ts.q if shift is None else ts.q.to(torch.int16) - shift
        if wide <= 128 or offset_form(wide):
            q = q.to(torch.int8)
        if nhwc:
            q = q.permute(0, 1, 4, 2, 3)
        scale_shape = (self.a_terms, *self._a_scale_shape(x))
        return q, None if offset is None else offset.reshape(scale_shape), ts.scales.reshape(scale_shape)

    def w_int_terms(self) -> torch.Tensor:
        """All weight terms, centered: [I, *weight shape], int8 when the grid fits it (cached)."""
        key = ("int", self.w_q.device)
        if key not in self._w_cache:
            q = torch.stack([self.w_centered(i) for i in range(self.w_terms)])
            self._w_cache[key] = q.to(torch.int8) if max_abs_int(self.w_bits, self.w_grid) <= 128 else q
        return self._w_cache[key]

    @property
    def _pairs_py(self) -> list[list[int]]:
        """`pairs` as Python ints, read once per pairs tensor (basis.py swaps it; in-place edits bump
        its version): no device -> host copy on every integer forward."""
        p, ver, rows = self._pairs_seen
        now = -1 if self.pairs.is_inference() else self.pairs._version  # inference tensors keep no version
        if p is not self.pairs or ver != now:
            rows = self.pairs.tolist()
            self._pairs_seen = (self.pairs, now, rows)
        return rows

    def integer_accumulators(self, x: torch.Tensor, kernel: str | None = None
                             ) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
        """{(i, j): (exact integer accumulator C_ij * Qw_i * Qx_j, scale s_i t_j)} for kept pairs.

        x is `prepared_input(layer input)` (non-zero padding modes applied). The accumulators are
        integer tensors (int32, int64 past the int32 bound), from the same GEMMs as the forward.
        kernel: see `intops.KERNELS`; None uses the layer's `int_kernel`.
        """
        return integer_accumulators(self, x, kernel or self.int_kernel)

    def _integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        return exact_forward(self, x, self.int_kernel)

    def _layout(self, y: torch.Tensor) -> torch.Tensor:
        """One memory layout for every kernel and mode (contiguous; channels-last for 2-D convolutions,
        what oneDNN's int8 convolution writes): FP ops downstream (pooling, means) then sum in the same
        order in simulate and integer mode, so equal layer outputs stay equal through them."""
        return y.contiguous()

    def _zero_out(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(torch.zeros_like(x), torch.zeros(self.w_q.shape[1:], dtype=x.dtype, device=x.device))

    def extra_repr(self) -> str:
        a = "A=FP" if self.act_fp else f"A{self.a_bits}x{self.a_terms}"
        return (f"W{self.w_bits}x{self.w_terms} {a} pairs={int(self.pairs.count_nonzero())} "
                f"mode={self.mode}{' term-parallel' if self.term_parallel else ''}")


class ExpandedLinear(ExpandedLayer):
    def __init__(self, m: nn.Linear, spec: LayerSpec, cfg: ExpansionConfig):
        super().__init__(m.weight, m.bias, spec, cfg)
        self.in_features, self.out_features = m.in_features, m.out_features

    def _pre(self, x):
        return x

    def _op(self, x, w, b=None):
        return F.linear(x, w, b)

    def _int_terms_op(self, xq, wq, max_x, max_w, kernel, rows, x_offset=None):
        return linear_terms(xq, wq, max_x, max_w, kernel, x_offset)

    def _bias_shape(self, y):
        return (-1,)

    def _w_out_scale(self, i, acc):
        return self.w_scale_b(i).reshape(-1)  # [out, 1] per channel -> [out]

    def _x_out_scale(self, sx, z):
        return sx  # [..., 1]: broadcasts over the last dim already


class _ExpandedConv(ExpandedLayer):
    dim = 2

    def __init__(self, m: nn.Conv1d | nn.Conv2d, spec: LayerSpec, cfg: ExpansionConfig):
        super().__init__(m.weight, m.bias, spec, cfg)
        self.in_channels, self.out_channels = m.in_channels, m.out_channels
        self.kernel_size, self.stride, self.dilation, self.groups = m.kernel_size, m.stride, m.dilation, m.groups
        self.padding_mode = m.padding_mode
        self._rev_pad = m._reversed_padding_repeated_twice
        # non-zero padding modes are applied to the FP input first: reflect/circular copy values,
        # which commutes with element-wise quantization under a per-sample or per-tensor scale
        self.padding = m.padding if m.padding_mode == "zeros" else 0

    def _a_granularity(self) -> str:
        # a conv's activation scale must be constant over its receptive field to commute with it
        return "per_sample" if self.a_granularity == "per_token" else self.a_granularity

    def _pre(self, x):
        if self.padding_mode != "zeros":
            return F.pad(x, self._rev_pad, mode=self.padding_mode)
        return x

    def _op(self, x, w, b=None):
        conv = F.conv1d if self.dim == 1 else F.conv2d
        return conv(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def _int_terms_op(self, xq, wq, max_x, max_w, kernel, rows, x_offset=None):
        # prepared weights (packed for oneDNN, im2col order for _int_mm) are built once per term set
        cache = self._w_cache.setdefault(("conv", rows, self.w_q.device), {})
        return conv_terms(xq, wq, self.dim, self.stride, self.padding, self.dilation, self.groups, max_x, max_w,
                          kernel, cache, x_offset)

    def _bias_shape(self, y):
        return (1, -1) + (1,) * (y.dim() - 2)

    def _integer_forward(self, x):
        fast = onednn_forward(self, x)  # CPU: oneDNN's int8 convolution, the rescale in its epilogue
        return fast if fast is not None else exact_forward(self, x, self.int_kernel)

    def _layout(self, y):
        return y.contiguous(memory_format=torch.channels_last) if y.dim() == 4 else y.contiguous()

    def _w_out_scale(self, i, acc):
        sw = self.w_scale_b(i)  # [out, 1, (1)] -> [1, out, 1, (1)]
        return sw.reshape((1, -1) + (1,) * (acc.dim() - 2)) if sw.numel() > 1 else sw.reshape((1,) * acc.dim())

    def _x_out_scale(self, sx, z):  # [N, 1, ...] or scalar-shaped
        return sx.reshape((-1,) + (1,) * (z.dim() - 1)) if sx.numel() > 1 else sx.reshape((1,) * z.dim())

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, " + super().extra_repr())


class ExpandedConv1d(_ExpandedConv):
    dim = 1


class ExpandedConv2d(_ExpandedConv):
    dim = 2


# Module swaps are found by exact type: subclasses such as MultiheadAttention's
# NonDynamicallyQuantizableLinear (whose weight is read directly by its parent) stay in FP.
LAYER_REGISTRY: dict[type, type[ExpandedLayer]] = {
    nn.Linear: ExpandedLinear,
    nn.Conv1d: ExpandedConv1d,
    nn.Conv2d: ExpandedConv2d,
}


def set_int_kernel(qmodel: nn.Module, kernel: str) -> nn.Module:
    """Chooses integer mode's GEMM path for every expanded layer of `qmodel` (in place; returns it).

    kernel: "auto" (int8 `torch._int_mm` on CPU and CUDA), "int_mm", "int_mm_cuda" (CUDA's shape
    rules, padded: runs on the CPU too), "float64" (exact float64 GEMMs / convolutions). Same
    accumulators on every path; only speed differs.
    """
    resolve_kernel(kernel, torch.device("cpu"))  # validates the name
    for m in qmodel.modules():
        if isinstance(m, ExpandedLayer):
            m.int_kernel = kernel
    return qmodel


def expand_layer(m: nn.Module, cfg: ExpansionConfig, spec: LayerSpec | None = None) -> ExpandedLayer:
    """Expands one supported layer (a new module; `m` is untouched)."""
    cls = LAYER_REGISTRY.get(type(m))
    if cls is None:
        names = ", ".join(t.__name__ for t in LAYER_REGISTRY)
        raise ValueError(f"cannot expand a {type(m).__name__}; supported layer types: {names} "
                         "(other modules stay in FP inside `expand`)")
    spec = spec or LayerSpec(cfg.w_bits, cfg.w_terms, cfg.a_bits, cfg.a_terms)
    layer = cls(m, spec, cfg)
    return layer.to(m.weight.device)
