"""Model level: expand() copies, folds BatchNorm, applies policies and overrides, rejects bad input."""
import copy
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from fpxint import ExpansionConfig, LayerOverride, expand, expanded_layers, fold_batchnorm, set_mode
from fpxint.model import check_overrides, expandable_layers, resolve_device


def small_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    for m in net.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def test_expand_leaves_input_bit_identical_and_returns_new_module():
    net = small_net()
    net[2].train()  # a mixed train / eval state must come back exactly as it was
    before = copy.deepcopy(net.state_dict())
    modules = [(name, type(m), m.training) for name, m in net.named_modules()]
    q = expand(net, ExpansionConfig(), device="cpu")
    assert q is not net
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    # still its BatchNorms (folding worked on a copy), and no module's train / eval flag changed
    assert [(name, type(m), m.training) for name, m in net.named_modules()] == modules
    assert [n for n, _ in expanded_layers(q)] == ["0", "3", "8"]
    assert q.fpxint_folded_bn == 2


def test_fold_batchnorm_is_exact_up_to_rounding():
    net = small_net()
    x = torch.randn(4, 3, 12, 12)
    folded = fold_batchnorm(net)
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_model_output_converges_geometrically():
    net = small_net()
    x = torch.randn(8, 3, 12, 12)
    with torch.no_grad():
        ref = fold_batchnorm(net)(x)
        errs = [((expand(net, ExpansionConfig(w_terms=k, a_terms=k))(x) - ref).norm() / ref.norm()).item()
                for k in (1, 2, 3, 4)]
    assert all(b < a / 4 for a, b in zip(errs, errs[1:])), errs  # 4-bit terms: ~1/14 per term


def test_first_last_policy_and_overrides():
    net = small_net()
    q = expand(net, ExpansionConfig(first_last="fp"))
    assert [n for n, _ in expanded_layers(q)] == ["3"]
    q = expand(net, ExpansionConfig(first_last="8bit"))
    layers = dict(expanded_layers(q))
    assert (layers["0"].w_bits, layers["0"].w_terms, layers["0"].a_bits) == (8, 1, 8)
    assert layers["3"].w_bits == 4
    cfg = ExpansionConfig(overrides={"3": LayerOverride(w_terms=5, a_bits=2), "8": {"fp": True}})
    q = expand(net, cfg)
    layers = dict(expanded_layers(q))
    assert "8" not in layers and layers["3"].w_terms == 5 and layers["3"].a_bits == 2
    assert ExpansionConfig.from_json(cfg.to_json()) == cfg


def test_integer_mode_matches_simulate_on_a_network():
    net = small_net()
    x = torch.randn(4, 3, 12, 12)
    q = expand(net, ExpansionConfig(w_terms=3, a_terms=3))
    with torch.no_grad():
        ys = q(x)
        yi = set_mode(q, "integer")(x)
        ref = fold_batchnorm(net)(x)
    # the same accumulators and the same rescale in both modes: no rounding can flip between them
    assert torch.equal(ys, yi)
    assert (ys - ref).norm() < 0.05 * ref.norm()


def test_mha_internals_stay_fp():
    enc = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    names = [n for n, _ in expandable_layers(enc)]
    assert "self_attn.out_proj" not in names and "linear1" in names
    q = expand(enc, ExpansionConfig(w_terms=3, a_terms=3, a_granularity="per_token"))
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.allclose(q(x), enc(x), atol=0.05)


def test_bad_models():
    with pytest.raises(ValueError, match="no layer that can be expanded"):
        expand(nn.Sequential(nn.ReLU(), nn.Conv3d(1, 1, 1)))
    net = small_net()
    net[0].weight.data[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        expand(net)
    with pytest.raises(ValueError, match="does not have"):
        expand(small_net(), ExpansionConfig(overrides={"nope": LayerOverride(fp=True)}))
    names = [n for n, _ in expandable_layers(small_net())]
    check_overrides(small_net(), ExpansionConfig(overrides={names[0]: LayerOverride(fp=True)}))  # a real layer
    with pytest.raises(ValueError, match=r"Sequential does not have: \['nope'\]; expandable layers: " + names[0]):
        check_overrides(small_net(), ExpansionConfig(overrides={"nope": LayerOverride(fp=True)}))
    with pytest.raises(ValueError, match="nn.Module"):
        expand(torch.randn(3))


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="auto"):
        resolve_device("tpu")


def test_import_fpxint_does_not_import_streamlit():
    code = "import sys, fpxint, fpxint.analysis, fpxint.plots; assert 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_expand_and_run(dtype):
    """fp16 / bf16 models expand and run (float32 inside each expanded layer); the output keeps the
    model's dtype and is as close to the float32 model as the model's own precision allows."""
    import math

    net = small_net()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    low = copy.deepcopy(net).to(dtype)
    cfg = ExpansionConfig(w_bits=8, w_terms=2, a_bits=8, a_terms=2)

    def sqnr(ref, y):
        ref, y = ref.double(), y.double()
        return 10 * math.log10(ref.square().sum() / (y - ref).square().sum())

    with torch.no_grad():
        ref = net(x)
        own = sqnr(ref, low(x.to(dtype)))  # the low-precision FP model's own error
        for mode in ("simulate", "integer"):
            y = expand(low, cfg.replace(mode=mode))(x.to(dtype))
            assert y.dtype == dtype and torch.isfinite(y).all()
            assert sqnr(ref, y) > own - 6, (mode, sqnr(ref, y), own)
    assert all(p.dtype == dtype for p in low.parameters())  # the input model is untouched


def test_expand_keeps_the_models_device_by_default():
    net = small_net()
    q = expand(net, ExpansionConfig())  # no device: where the model is (CPU), even with a GPU present
    assert {t.device.type for t in q.state_dict().values()} == {"cpu"}
    if torch.cuda.is_available():
        qc = expand(net.cuda(), ExpansionConfig())
        assert {t.device.type for t in qc.state_dict().values()} == {"cuda"}


@pytest.fixture(scope="module")
def resnet20_images():
    from fpxint.data import load_data
    from fpxint.zoo import find_shared, load_model

    shared = find_shared()
    if shared is None or not (shared / "models/cifar10/resnet20-12fca82f.th").exists():
        pytest.skip("../shared (or FPXINT_SHARED) with the CIFAR-10 ResNet-20 checkpoint is not present")
    lm = load_model("resnet20", shared_dir=shared)
    return lm.model, load_data(str(shared / "data/cifar10-test"), lm.spec, limit=12, seed=0).images


@pytest.mark.parametrize("bits,terms", [(4, 2), (3, 3)], ids=["W4A4x2", "W3A3x3"])
def test_logits_do_not_depend_on_batch_mates(resnet20_images, bits, terms):
    """Real ResNet-20 and 12 real images: one batch of 12, batches of 1 and shuffled uneven batches give
    the same logits bit for bit (before: float summation orders chosen by batch size flipped activation
    roundings, e.g. every one of 64 images changed at W4x2 A4x2), and simulate equals integer mode."""
    model, x = resnet20_images
    q = expand(model, ExpansionConfig(w_bits=bits, w_terms=terms, a_bits=bits, a_terms=terms), device="cpu")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        one = q(x)
        singles = torch.cat([q(x[i:i + 1]) for i in range(len(x))])
        shuffled = torch.empty_like(one)
        for s in range(0, len(x), 5):  # batches of 5, 5, 2 in a shuffled order
            shuffled[perm[s:s + 5]] = q(x[perm[s:s + 5]])
        integer = set_mode(q, "integer")(x)
    assert torch.equal(singles, one) and torch.equal(shuffled, one) and torch.equal(integer, one)
