"""Analysis functions leave the caller's model untouched (training flag, BatchNorm statistics, device)."""
import copy

import pytest
import torch
import torch.nn as nn

from fpxint import ExpansionConfig
from fpxint import analysis


def train_mode_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    return net.train()  # as a training script would hand it over


@pytest.mark.parametrize("fold_bn", [False, True])
def test_analysis_never_changes_the_callers_model(fold_bn):
    net = train_mode_net()
    before = copy.deepcopy(net.state_dict())
    cfg = ExpansionConfig(w_bits=4, w_terms=2, a_bits=4, a_terms=2, fold_bn=fold_bn)
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(2))
    calls = {
        "weight_residuals": lambda: analysis.weight_residuals(net, cfg),
        "layer_output_errors": lambda: analysis.layer_output_errors(net, cfg, x, terms=[1, 2]),
        "model_output_error": lambda: analysis.model_output_error(net, cfg, x, terms=[1, 2]),
        "logits_of": lambda: analysis.logits_of(net, (x, y), batch_size=4),
        "evaluate": lambda: analysis.evaluate(net, cfg, (x, y), batch_size=4),
        "evaluate FP": lambda: analysis.evaluate(net, None, (x, y), batch_size=4),
        "accuracy_grid": lambda: analysis.accuracy_grid(net, (x, y), cfg, bits=(4,), terms=(1,), batch_size=4),
    }
    for what, call in calls.items():
        call()
        assert all(m.training for m in net.modules()), f"{what} changed the training flag"
        for k, v in net.state_dict().items():  # running_mean / running_var / num_batches_tracked
            assert torch.equal(v, before[k]), f"{what} changed {k}"
        assert next(net.parameters()).device.type == "cpu"
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules()), what


def test_reference_is_the_eval_mode_model():
    """With fold_bn=False the reference is the model in eval mode (running statistics, no dropout),
    as the expansion is: at W8 x 3 terms the two agree far better than a train-mode pass would."""
    net = train_mode_net()
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    cfg = ExpansionConfig(w_bits=8, w_terms=3, a_bits=8, a_terms=3, fold_bn=False)
    for df in (analysis.layer_output_errors(net, cfg, x), analysis.model_output_error(net, cfg, x, terms=[3])):
        assert df["sqnr_db"].min() > 60, df
