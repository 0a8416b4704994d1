"""Layer level: expanded Linear / Conv1d / Conv2d.

A linear layer is bilinear in weight and input, so with W = sum_i s_i Qw_i and X = sum_j t_j Qx_j

    Y = sum_(i,j) C_ij * s_i t_j (Qw_i * Qx_j) + b

where `C` (the `pairs` buffer, integers) says which cross terms are kept: all ones for the full
grid, i + j <= K for the total order, a single 1 for a basis model. The weights are expanded once
at construction; the input is expanded at run time from the actual input (calibration-free).

Execution modes:
- simulate: float. Rows of C that are equal share one float op: the full grid is ONE op with
  W_hat = sum_i s_i Qw_i and X_hat = sum_j t_j Qx_j, so the cost stays near the FP layer's.
  At level "model" every kept pair runs as its own op (term-parallel basis models).
- integer: each kept pair is an exact integer GEMM / convolution (`intops`), rescaled once by
  s_i t_j, summed in float64.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ExpansionConfig, LayerSpec
from .intops import check_exact, int_conv, int_linear, max_abs_int, reduction_size
from .fused import expand_tensor_fused, expanded_sum_fused  # bit-identical to series, one pass per term
from .series import _series_steps
from .quant import group_view


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
        self.term_parallel = cfg.level == "model"
        self.truncation = "full" if self.act_fp else cfg.truncation
        self.register_buffer("pairs", pair_matrix(self.w_terms, self.a_terms, self.truncation, cfg.total_order))
        self._w_cache: dict = {}

    # ----- weights -------------------------------------------------------------------------
    def _w_shape(self) -> tuple[int, ...]:
        return (-1,) + (1,) * (self.w_q.dim() - 2) if self.w_granularity == "per_channel" else (1,) * (self.w_q.dim() - 1)

    def w_centered(self, i: int) -> torch.Tensor:
        """Weight term i (0-based) as signed integers."""
        q = self.w_q[i].to(torch.int16)
        if self.w_zero is not None:
            q = q - self.w_zero[i].reshape(self._w_shape()).to(torch.int16)
        return q

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

    def activation_terms(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Run-time series of the input: [(centered integers as float, broadcast scale), ...]."""
        r = group_view(x, self._a_granularity())
        out = []
        for q, s, z, _ in _series_steps(r, self.a_bits, self.a_terms, self.a_grid, self.scale_rule):
            q = q - z if z is not None else q
            out.append((q.reshape(x.shape), s.reshape(self._a_scale_shape(x))))
        return out

    # ----- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = self._pre(x).to(_compute_dtype(dtype))  # fp16 / bf16 inputs: float32 inside, cast back below
        if self.mode != "integer":
            return self._simulate_forward(x).to(dtype)  # adds the bias inside its first float op
        y = self._integer_forward(x)
        return (y + self.bias.reshape(self._bias_shape(y)) if self.bias is not None else y).to(dtype)

    def _simulate_forward(self, x: torch.Tensor) -> torch.Tensor:
        C = self.pairs
        rows = [tuple(int(v) for v in C[i]) for i in range(C.shape[0])]
        if self.term_parallel:  # level "model": every kept basis pair runs on its own
            xs = [x] if self.act_fp else [q * s for q, s in self.activation_terms(x)]
            y = None
            for i in range(C.shape[0]):
                for j in range(C.shape[1]):
                    if C[i, j]:
                        e = tuple(int(k == i) for k in range(C.shape[0]))
                        t = int(C[i, j]) * self._op(xs[j], self.weight_terms_sum(e))
                        y = t if y is None else y + t
            y = y if y is not None else self._zero_out(x)
            return y + self.bias.reshape(self._bias_shape(y)) if self.bias is not None else y
        groups: dict[tuple[int, ...], list[int]] = {}  # equal rows of C share one float op
        for i, row in enumerate(rows):
            if any(row):
                groups.setdefault(row, []).append(i)
        y = None
        for row, idx in groups.items():
            wc = tuple(int(k in idx) for k in range(len(rows)))
            if self.act_fp:
                xr = x if row[0] == 1 else x * row[0]
            else:  # accumulate: sum_j c_j t_j Qx_j term by term, as rows differ (total order)
                xr = expanded_sum_fused(x, self.a_bits, self.a_terms, self._a_granularity(), self.a_grid,
                                        self.scale_rule, coeffs=row, accumulate=len(groups) > 1)
            t = self._op(xr, self.weight_terms_sum(wc), self.bias.to(xr.dtype) if y is None and self.bias is not None
                         else None)
            y = t if y is None else y + t
        if y is None:
            y = self._zero_out(x)
            y = y + self.bias.reshape(self._bias_shape(y)) if self.bias is not None else y
        return y

    def integer_accumulators(self, x: torch.Tensor) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
        """{(i, j): (exact integer accumulator C_ij * Qw_i * Qx_j as float64, scale s_i t_j)} for kept pairs.

        x is the layer input after `_pre` (non-zero padding modes applied).
        """
        C = self.pairs
        check_exact(reduction_size(self.w_q[0]), max_abs_int(self.w_bits, self.w_grid),
                    max_abs_int(self.a_bits, self.a_grid) if not self.act_fp else 1)
        if self.act_fp:
            raise ValueError("integer mode needs expanded activations; this layer keeps its input in FP "
                             "(level='tensor' or truncation='weight_only'): use mode='simulate'")
        xterms = self.activation_terms(x)
        out = {}
        for i in range(C.shape[0]):
            wi = self.w_centered(i)
            for j in range(C.shape[1]):
                if C[i, j]:
                    acc = self._int_op(xterms[j][0], wi) * int(C[i, j])
                    scale = self._out_scale(self.w_scale_b(i), xterms[j][1], acc)
                    out[(i, j)] = (acc, scale)
        return out

    def _integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        accs = self.integer_accumulators(x)
        if not accs:
            return self._zero_out(x)
        y = None
        for acc, scale in accs.values():  # one rescale per integer accumulator
            t = acc * scale.to(torch.float64)
            y = t if y is None else y + t
        return y.to(x.dtype)

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

    def _int_op(self, xq, wq):
        return int_linear(xq, wq)

    def _bias_shape(self, y):
        return (-1,)

    def _out_scale(self, sw, sx, acc):
        # sw: [out, 1] per channel -> [out]; sx broadcasts over the last dim already
        return sw.reshape(-1) * sx if sw.dim() > 1 else sw * sx


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

    def _int_op(self, xq, wq):
        return int_conv(xq, wq, self.dim, self.stride, self.padding, self.dilation, self.groups)

    def _bias_shape(self, y):
        return (1, -1) + (1,) * (y.dim() - 2)

    def _out_scale(self, sw, sx, acc):
        # sw: [out, 1, (1)] -> [1, out, 1, (1)]; sx: [N, 1, ...] or scalar-shaped
        sw = sw.reshape((1, -1) + (1,) * (acc.dim() - 2)) if sw.numel() > 1 else sw.reshape((1,) * acc.dim())
        return sw * sx.reshape((-1,) + (1,) * (acc.dim() - 1)) if sx.numel() > 1 else sw * sx.reshape((1,) * acc.dim())

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
