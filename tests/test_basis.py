"""Basis models and the Abelian laws, on the real CIFAR-10 ResNet-20 checkpoint and real images.

In integer mode every law is checked with torch.equal: AbelianAdd adds integer coefficients of
the same integer terms, so any order or grouping gives bit-identical accumulators and outputs.
"""
import random

import pytest
import torch
import torch.nn as nn

from fpxint import ExpansionConfig, expand, fold_batchnorm, set_mode
from fpxint.basis import (abelian_add, abelian_mul, abelian_neg, basis_model, basis_models, pairs_of,
                          partial_model, zero_model)
from fpxint.zoo import load_model


@pytest.fixture(scope="module")
def resnet20_and_images(shared_dir, shared_file):
    shared_file("models/cifar10/resnet20-12fca82f.th", "the ResNet-20 checkpoint")
    from fpxint.data import load_data
    lm = load_model("resnet20", shared_dir=shared_dir)
    data = load_data(str(shared_dir / "data/cifar10-test"), lm.spec, limit=20, seed=0)
    return lm.model, data.images


@pytest.fixture(scope="module")
def qmodel(resnet20_and_images):
    model, _ = resnet20_and_images
    return set_mode(expand(model, ExpansionConfig(w_bits=3, w_terms=2, a_bits=3, a_terms=2), device="cpu"),
                    "integer")


def run(m, x):
    with torch.no_grad():
        return set_mode(m, "integer")(x)


def test_sum_of_basis_models_in_any_order_is_the_expanded_model(qmodel, resnet20_and_images):
    x = resnet20_and_images[1]
    target = run(qmodel, x)
    basis = basis_models(qmodel)
    assert set(basis) == {(1, 1), (1, 2), (2, 1), (2, 2)}
    rng = random.Random(0)
    for _ in range(3):
        keys = list(basis)
        rng.shuffle(keys)
        assert torch.equal(run(abelian_add(*[basis[k] for k in keys]), x), target)
    # a parallel tree: ((11 + 22) + (12 + 21))
    tree = abelian_add(abelian_add(basis[(1, 1)], basis[(2, 2)]), abelian_add(basis[(1, 2)], basis[(2, 1)]))
    assert torch.equal(run(tree, x), target)


def test_group_laws(qmodel, resnet20_and_images):
    x = resnet20_and_images[1]
    a, b, c = basis_model(qmodel, 1, 1), basis_model(qmodel, 2, 1), basis_model(qmodel, 1, 2)
    zero = zero_model(qmodel)
    assert torch.equal(run(abelian_add(a, zero), x), run(a, x))  # identity
    inv = abelian_add(qmodel, abelian_neg(qmodel))
    assert all(int(p.abs().sum()) == 0 for p in pairs_of(inv).values())  # inverse
    assert torch.equal(run(inv, x), run(zero, x))
    assert torch.equal(run(abelian_add(a, b), x), run(abelian_add(b, a), x))  # commutativity
    assert torch.equal(run(abelian_add(abelian_add(a, b), c), x), run(abelian_add(a, abelian_add(b, c)), x))


def test_abelian_mul_is_bilinear_and_pairs_basis_terms(qmodel, resnet20_and_images):
    x = resnet20_and_images[1]
    assert torch.equal(run(abelian_mul(qmodel, [1, 0], [0, 1]), x), run(basis_model(qmodel, 1, 2), x))
    assert torch.equal(run(abelian_mul(qmodel, [1, 1], [1, 1]), x), run(qmodel, x))
    lhs = abelian_mul(qmodel, [1, 2], [1, 0])
    rhs = abelian_add(abelian_mul(qmodel, [1, 0], [1, 0]), abelian_mul(qmodel, [0, 2], [1, 0]))
    assert torch.equal(run(lhs, x), run(rhs, x))  # distributes over AbelianAdd (weight side)
    lhs = abelian_mul(qmodel, [1, 1], [3, -1])
    rhs = abelian_add(abelian_mul(qmodel, [1, 1], [3, 0]), abelian_mul(qmodel, [1, 1], [0, -1]))
    assert torch.equal(run(lhs, x), run(rhs, x))  # and on the activation side


def test_basis_models_share_integer_terms(qmodel):
    b = basis_model(qmodel, 2, 2)
    for (_, l1), (_, l2) in zip(qmodel.named_modules(), b.named_modules()):
        if hasattr(l1, "w_q"):
            assert l1.w_q.data_ptr() == l2.w_q.data_ptr()


def test_lockstep_needed_separate_runs_do_not_sum(qmodel, resnet20_and_images):
    """relu(a + b) != relu(a) + relu(b): summing separately run basis networks is not the model."""
    x = resnet20_and_images[1]
    basis = basis_models(qmodel)
    zero_out = run(zero_model(qmodel), x)
    separate = sum(run(m, x) - zero_out for m in basis.values()) + zero_out
    target = run(qmodel, x)
    assert (separate - target).norm() > 0.1 * target.norm()


def test_separate_runs_do_sum_for_a_single_linear_layer():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    q = set_mode(expand(lin, ExpansionConfig(w_terms=3, a_terms=2)), "integer")
    x = torch.randn(4, 16)
    bias_only = run(zero_model(q), x)
    separate = sum(run(m, x) - bias_only for m in basis_models(q).values()) + bias_only
    assert torch.allclose(separate, run(q, x), atol=1e-5)


def test_partial_models_converge(resnet20_and_images):
    model, x = resnet20_and_images
    q = expand(model, ExpansionConfig(w_bits=4, w_terms=4, a_bits=4, a_terms=4), device="cpu")
    with torch.no_grad():
        ref = fold_batchnorm(model)(x)
        errs = [((partial_model(q, k)(x) - ref).norm() / ref.norm()).item() for k in (1, 2, 3, 4)]
        assert torch.equal(partial_model(q, 4)(x), q(x))
    assert all(b < a / 3 for a, b in zip(errs, errs[1:])), errs
