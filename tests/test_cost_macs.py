"""cost.layer_macs (forward hooks) against torch.utils.flop_counter.FlopCounterMode: the same MACs per layer.

The library count is the oracle the hand-written hooks are kept beside (they avoid its process-global
module tracking, see cost.layer_macs); 2 FLOPs per multiply-accumulate for conv and linear layers.
"""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fpxint.cost import layer_macs
from fpxint.model import expandable_layers, fold_batchnorm
from fpxint.zoo import load_model


@pytest.mark.parametrize("name", ["digits_cnn", "resnet20"])
def test_layer_macs_equal_flop_counter(name):
    lm = load_model(name, allow_untrained=True)  # the architecture is what counts, not the weights
    ours = layer_macs(lm.model, lm.spec.input_size)
    fm = fold_batchnorm(lm.model)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fm(torch.zeros((1, *lm.spec.input_size)))
    counts, root = fc.get_flop_counts(), type(fm).__name__
    lib = {n: sum(counts.get(f"{root}.{n}", {}).values()) // 2 for n, _ in expandable_layers(fm)}
    assert ours == lib and sum(lib.values()) > 0
