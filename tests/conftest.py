"""Shared pytest fixtures: the read-only shared folder (checkpoints, CIFAR-10 test JPEGs)."""

from pathlib import Path

import pytest

from fpxint.zoo.paths import find_shared


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder ($FPXINT_SHARED or ../shared); skips the test when it is absent."""
    shared = find_shared()
    if shared is None:
        pytest.skip("shared folder not found: set FPXINT_SHARED or put it at ../shared beside the checkout")
    return shared


@pytest.fixture(scope="session")
def cifar_test_dir(shared_dir: Path) -> Path:
    """The 10,000 CIFAR-10 test JPEGs in ImageFolder layout."""
    path = shared_dir / "data" / "cifar10-test"
    if not path.is_dir():
        pytest.skip(f"CIFAR-10 test images not found at {path}")
    return path
