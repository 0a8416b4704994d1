"""What is measured against a reference: SQNR, top-1, top-1 agreement and KL (one implementation each).

SQNR convention (everywhere in fpxint: tensor residuals, layer and model outputs, logits, the CLI):
``10 log10(signal power / noise power)`` with both powers summed in float64; **+inf when the noise
is exactly zero** (the result is exact), -inf for a zero signal with nonzero noise. JSON has no
infinity: the writers (`fpxint.cli.args.dumps`) write it as ``null``. The allocation's additive noise
model floors relative noise at `fpxint.allocation.sensitivity.FLOOR` so its sums and ratios stay
finite; that is a property of the model's noise, not of a measured SQNR.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sqnr_from_powers(signal: float, noise: float) -> float:
    """SQNR in dB from a signal power and a noise power (+inf at zero noise, see the module docstring)."""
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    """SQNR of `out` against `ref` in dB (float64 powers; +inf when `out` equals `ref`)."""
    ref, out = ref.double(), out.double()
    return sqnr_from_powers(ref.square().sum().item(), (out - ref).square().sum().item())


def top1(logits: torch.Tensor, labels: torch.Tensor | None) -> float | None:
    """Percent of rows whose argmax is the label; None without labels. Counted, then divided in float64."""
    if labels is None:
        return None
    return 100 * (logits.argmax(1).cpu() == labels.cpu()).sum().item() / len(labels)


def agreement(fp_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Fraction (0..1) of rows whose argmax equals the FP model's."""
    return (fp_logits.argmax(1) == logits.argmax(1)).sum().item() / len(fp_logits)


def kl(fp_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """KL(FP || expanded) of the softmax distributions in nats per row, in float64."""
    return F.kl_div(F.log_softmax(logits.double(), 1), F.log_softmax(fp_logits.double(), 1), log_target=True,
                    reduction="batchmean").item()
