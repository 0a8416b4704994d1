"""The test harness itself (tests/conftest.py): under CI=true missing shared data fails instead of
skipping, and collecting the suite compiles nothing (the fused C kernel builds on first use, in a fixture)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL_USERS = ["tests/test_fused.py", "tests/test_series.py", "tests/test_layers.py"]  # collected, not run
# two tests that need the shared folder: one through `shared_file`, one through `skip_or_fail` directly
NEEDS_SHARED = ["test_the_shared_labels_match_the_csv", "test_cifar_weights_are_found_in_the_cache_dir"]


def _pytest(args: list[str], tmp_path: Path, shared: Path, ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env.update(FPXINT_SHARED=str(shared), FPXINT_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rsfE", *args,
                           "-k", " or ".join(NEEDS_SHARED)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_missing_shared_data_skips_locally_and_fails_under_ci(tmp_path):
    # local run, no shared folder at all: both skip, and collecting the modules that use the kernel built none
    local = _pytest(["tests/test_labelfiles.py", "tests/test_zoo.py", *KERNEL_USERS], tmp_path,
                    tmp_path / "no-such-folder", ci=False)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    assert "2 skipped" in local.stdout and "the shared folder was not found" in local.stdout, local.stdout[-3000:]
    assert not (tmp_path / "cache" / "kernels").exists(), "collection compiled the fused kernel"

    # CI=true, a shared folder without the files: both fail, naming what is missing
    empty = tmp_path / "empty-shared"
    empty.mkdir()
    ci = _pytest(["tests/test_labelfiles.py", "tests/test_zoo.py"], tmp_path, empty, ci=True)
    assert ci.returncode == 1, ci.stdout[-3000:] + ci.stderr[-3000:]
    assert "2 failed" in ci.stdout and "skipped" not in ci.stdout, ci.stdout[-3000:]
    assert "CI=true and the ImageNet validation subset not found at" in ci.stdout
    assert "CI=true and the resnet20 checkpoint not found at" in ci.stdout
