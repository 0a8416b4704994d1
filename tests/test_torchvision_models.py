"""Every torchvision classification architecture (weights=None) expands and runs.

Generated from torchvision's own model list, like timm's test_models.py. By default every model
up to 15 M parameters runs, plus the smallest member of each other family (ViT, Swin, ConvNeXt,
MaxViT, ...) up to 90 M; the rest are marked slow: `pytest -m slow` runs them.
"""
import math
import re

import pytest
import torch
import torchvision

from fpxint import ExpansionConfig, expand, expanded_layers, fold_batchnorm

FAST_PARAMS = 15_000_000
FAMILY_CAP = 90_000_000
NEEDS_224 = ("vit", "swin", "maxvit")
NAMES = sorted(torchvision.models.list_models(module=torchvision.models))


def _family(name: str) -> str:
    return "wide_resnet" if name.startswith("wide_") else re.split(r"\d|_", name)[0]


def _fast_names() -> set[str]:
    params = {n: torchvision.models.get_model_weights(n).DEFAULT.meta["num_params"] for n in NAMES}
    fast = {n for n in NAMES if params[n] <= FAST_PARAMS}
    for fam in {_family(n) for n in NAMES}:
        members = sorted((params[n], n) for n in NAMES if _family(n) == fam)
        if not any(n in fast for _, n in members) and members[0][0] <= FAMILY_CAP:
            fast.add(members[0][1])
    return fast


FAST = _fast_names()


def _input(name):
    if name.startswith(NEEDS_224):
        return torch.randn(1, 3, 224, 224)
    if name in ("inception_v3", "googlenet"):
        return torch.randn(1, 3, 96, 96)
    return torch.randn(1, 3, 64, 64)


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_torchvision_model_expands_and_runs(name):
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("inception_v3", "googlenet") else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    with torch.no_grad():  # zero-initialized heads (ViT) would make the FP output identically 0
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.02)
    x = _input(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = expand(model, ExpansionConfig(w_bits=4, w_terms=3, a_bits=4, a_terms=3), device="cpu")
    with torch.no_grad():
        ref = fold_batchnorm(model)(x)
        y = q(x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    assert len(expanded_layers(q)) > 0
    assert torch.isfinite(y).all() and y.shape == ref.shape
    # random-init nets amplify noise, so the floor is modest; trained nets do far better
    sqnr = 10 * math.log10(ref.square().sum() / (y - ref).square().sum().clamp_min(1e-30))
    assert sqnr > 10, f"{name}: output SQNR {sqnr:.1f} dB with W4x3 A4x3"
