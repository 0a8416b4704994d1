"""fpxint.metrics: the one SQNR convention (+inf when exact), top-1, agreement and KL against closed forms."""
import math

import torch

from fpxint import metrics


def test_sqnr_convention_at_zero_error_and_a_known_value():
    x = torch.randn(100, generator=torch.Generator().manual_seed(0))
    assert metrics.sqnr_db(x, x.clone()) == math.inf  # exact: +inf, not a cap and not None
    assert metrics.sqnr_db(torch.zeros(3), torch.ones(3)) == -math.inf
    ref, out = torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.5])  # signal 25, noise 0.25 -> 20 dB
    assert metrics.sqnr_db(ref, out) == 10 * math.log10(25 / 0.25)
    assert metrics.sqnr_from_powers(1.0, 1e-3) == 10 * math.log10(1e3)


def test_top1_agreement_kl():
    fp = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 0.0]])
    q = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.0]])
    assert metrics.top1(fp, torch.tensor([0, 2, 1])) == 100 * 2 / 3
    assert metrics.top1(fp, None) is None
    assert metrics.agreement(fp, q) == 2 / 3
    assert metrics.kl(fp, fp) == 0.0
    p, r = torch.softmax(fp.double(), 1), torch.softmax(q.double(), 1)
    assert math.isclose(metrics.kl(fp, q), (p * (p / r).log()).sum(1).mean().item(), rel_tol=1e-12)
