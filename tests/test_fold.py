"""BatchNorm folding: pairs found without any process-global patch, and thread safety of expand()."""
import threading

import pytest
import torch
import torch.nn as nn
import torchvision

from fpxint import ExpansionConfig, expand, fold_batchnorm
from fpxint.fold import _BN, LAYER_REGISTRY, conv_bn_pairs
from fpxint.zoo import load_model


def _fx_pairs(model):
    """The pairs torch.fx's symbolic trace finds (the rule used before): an oracle, single-threaded only."""
    gm = torch.fx.symbolic_trace(model)
    calls = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), _BN):
            prev = node.args[0]
            if (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                    and type(gm.get_submodule(prev.target)) in LAYER_REGISTRY
                    and calls[prev.target] == 1 and calls[node.target] == 1):
                out.append((prev.target, node.target))
    return sorted(out)


def _randomize_bn(model):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BN):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.copy_(0.2 * torch.rand(m.num_features, generator=gen) - 0.1)
    return model.eval()


class Shared(nn.Module):  # the conv output feeds the BN AND the residual: folding would change the residual
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class Twice(nn.Module):  # one conv called twice: its weights serve two call sites
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(self.conv(x)))


class Between(nn.Module):  # an op between conv and BN; a shape read is no consumer
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.c1(x)
        assert y.shape[1] == 4 and y.dim() == 4
        return self.b2(self.c2(torch.relu(self.b1(y))).relu())


@pytest.mark.parametrize("model, expected", [
    (Shared(), []), (Twice(), []), (Between(), [("c1", "b1")]),
    (nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)), [("0", "1")]),
])
def test_pairs_only_where_the_batchnorm_is_the_single_consumer(model, expected):
    model = _randomize_bn(model)
    assert sorted(conv_bn_pairs(model)) == expected
    x = torch.randn(3, 4, 8, 8) if not isinstance(model, nn.Sequential) else torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(model)(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "googlenet"])
def test_pairs_equal_the_fx_trace(name):
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    assert sorted(conv_bn_pairs(model)) == _fx_pairs(model) != []


def test_model_that_rejects_the_guessed_input_falls_back_or_uses_the_given_one():
    class Fixed(nn.Module):  # needs exactly 5x5 inputs, and is no nn.Sequential
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Linear(27, 2)

        def forward(self, x):
            return self.fc(self.bn(self.conv(x)).flatten(1))

    model = _randomize_bn(Fixed())
    assert conv_bn_pairs(model) == []  # no guessed size runs: adjacency in Sequential finds nothing
    x = torch.randn(2, 2, 5, 5)
    assert conv_bn_pairs(model, x) == [("conv", "bn")]
    q = expand(model, ExpansionConfig(w_bits=8, w_terms=3, a_bits=8, a_terms=3), example_input=x)
    assert q.fpxint_folded_bn == 1
    with torch.no_grad():
        torch.testing.assert_close(q(x), model(x), atol=1e-3, rtol=1e-3)


def test_no_process_global_patch_during_pair_finding():
    seen = []

    class Spy(nn.Module):  # records what nn.Module.__call__ is while the pairs are being found
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            seen.append((type(self).__call__, nn.Module.__call__, nn.Module.__getattr__))
            return self.bn(self.conv(x))

    original = (nn.Module.__call__, nn.Module.__call__, nn.Module.__getattr__)
    assert conv_bn_pairs(Spy().eval()) == [("conv", "bn")]
    assert seen and all(s == original for s in seen)


def _concurrent_outputs(model, x, threads=8, runs=3):
    cfg = ExpansionConfig(w_bits=4, w_terms=2, a_bits=4, a_terms=2)
    results, errors = [], []
    barrier = threading.Barrier(threads)

    def work():
        barrier.wait()  # start together: maximal overlap
        try:
            for _ in range(runs):
                with torch.no_grad():
                    results.append(expand(model, cfg, device="cpu")(x))
        except Exception as e:  # noqa: BLE001 - collected and reported by the assertion below
            errors.append(repr(e))

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    with torch.no_grad():
        ref = expand(model, cfg, device="cpu")(x)
    return ref, results, errors


@pytest.mark.parametrize("which", ["resnet20", "resnet18"])
def test_expand_and_forward_from_8_threads_equal_the_sequential_result(which, request):
    if which == "resnet20":
        model = load_model("resnet20", shared_dir=request.getfixturevalue("shared_dir")).model
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    else:
        torch.manual_seed(0)
        model = _randomize_bn(torchvision.models.resnet18(weights=None))
        x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    call, getattr_ = nn.Module.__call__, nn.Module.__getattr__
    ref, results, errors = _concurrent_outputs(model, x)
    assert errors == []
    assert len(results) == 24 and all(torch.equal(r, ref) for r in results)
    assert nn.Module.__call__ is call and nn.Module.__getattr__ is getattr_
