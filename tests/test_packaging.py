"""fpxint as an installed package: the wheel built from this tree, installed into a fresh virtual environment,
runs `fpxint --help`, `fpxint eval` on the built-in model and `fpxint app` from anywhere, with no checkout.

The fresh environment reuses this interpreter's installed dependencies through a .pth file (nothing is
downloaded), and it runs from an empty folder without PYTHONPATH, so neither the checkout nor its
editable install can stand in for the wheel: every test asserts where `fpxint` was imported from.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import json
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
EVAL = ["eval", "digits_cnn", "--limit", "64", "--json"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list, env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A fresh venv holding the wheel built from a copy of this tree; returns its paths and environment."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"  # a copy: building in the checkout would leave build/ and *.egg-info behind
    shutil.copytree(ROOT / "fpxint", src / "fpxint", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FPXINT_SHARED", "VIRTUAL_ENV")}
    env.update(FPXINT_CACHE=str(tmp / "cache"), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src],
         env, tmp)
    wheel = next((tmp / "dist").glob("fpxint-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], env, tmp)
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env, tmp)
                   .stdout.strip())
    # This interpreter's site-packages, appended after the venv's own: torch & co. come from there, while
    # fpxint comes from the venv (a .pth line is only a path: the editable install's own .pth is not run).
    (purelib / "reuse_installed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "-q", wheel], env, tmp)
    work = tmp / "work"
    work.mkdir()
    return {"python": python, "bin": venv / "bin", "purelib": purelib, "env": env, "cwd": work, "wheel": wheel}


def test_installed_fpxint_is_the_wheel_not_the_checkout(installed):
    out = _run([installed["python"], "-c", "import fpxint, fpxint.app.main as m; print(fpxint.__file__); "
                "print(m.PAGE_DIR)"], installed["env"], installed["cwd"]).stdout.split()
    assert Path(out[0]).is_relative_to(installed["purelib"]), out
    assert sorted(p.name for p in Path(out[1]).glob("*.py")) == sorted(p.name for p in (ROOT / "fpxint/app/pages")
                                                                       .glob("*.py"))


def test_installed_help_lists_every_command(installed):
    out = _run([installed["bin"] / "fpxint", "--help"], installed["env"], installed["cwd"]).stdout
    for command in ("models", "eval", "sweep", "expand", "allocate", "app"):
        assert re.search(rf"^\s+{command}\s", out, re.M), out


def test_installed_eval_gives_the_checkouts_numbers(installed, capsys, monkeypatch):
    """The built-in model (weights, digits split) travels in the wheel: same numbers as this tree's code."""
    from fpxint.cli import main

    got = json.loads(_run([installed["bin"] / "fpxint", *EVAL], installed["env"], installed["cwd"]).stdout)
    monkeypatch.setenv("FPXINT_CACHE", installed["env"]["FPXINT_CACHE"])
    assert main(EVAL) == 0
    want = json.loads(capsys.readouterr().out)
    keys = ("fp_top1", "top1", "agreement", "kl", "logit_sqnr_db", "cost", "n_images", "data", "label")
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
    assert got["fp_top1"] >= 90  # trained weights, not random ones


def test_installed_package_has_no_shared_fallback(installed):
    """`../shared` is a checkout's convention: beside site-packages it is ignored; FPXINT_SHARED still works."""
    (installed["purelib"].parent / "shared").mkdir(exist_ok=True)  # would be found if the fallback applied
    code = "from fpxint.zoo.paths import find_shared, checkout_root; print(find_shared(), checkout_root())"
    assert _run([installed["python"], "-c", code], installed["env"], installed["cwd"]).stdout.split() == \
        ["None", "None"]
    env = {**installed["env"], "FPXINT_SHARED": str(installed["cwd"])}
    assert _run([installed["python"], "-c", code], env, installed["cwd"]).stdout.split() == \
        [str(installed["cwd"].resolve()), "None"]


def test_installed_app_serves_and_stops_on_ctrl_c(installed):
    port = _free_port()
    log = installed["cwd"] / "app.log"
    proc = subprocess.Popen([installed["bin"] / "fpxint", "app", "--port", str(port), "--address", "127.0.0.1",
                             "--", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            env=installed["env"], cwd=installed["cwd"], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    assert r.read().strip() == b"ok"
                break
            except OSError:
                assert proc.poll() is None, f"fpxint app exited: {log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no health answer in 300 s: {log.read_text()[-3000:]}"
                time.sleep(0.5)
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and b'id="root"' in r.read()
        text = log.read_text()
        assert "stop it with Ctrl+C" in text and str(installed["purelib"]) in text, text[-3000:]
        # the st.App lifespan ran from the installed package: the default view is computed before serving
        assert "default view computed at start-up" in text, text[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl+C in a terminal does: the whole process group
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert rc == 0, log.read_text()[-3000:]


# ----- the declared dependencies ------------------------------------------------------------------------
def _declared(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return [Requirement(line.split(":", 1)[1].strip()) for line in meta.splitlines()
            if line.startswith("Requires-Dist:")]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def _extra(req: Requirement) -> str:
    found = re.search(r"""extra\s*==\s*["']([^"']+)""", str(req.marker or ""))
    return found.group(1) if found else ""


def test_pinned_requirements_satisfy_the_declared_ranges(installed):
    """requirements.txt (what CI installs) and requirements-bench.txt fall inside the wheel's ranges."""
    pins = _pins(ROOT / "requirements.txt") | _pins(ROOT / "requirements-bench.txt")
    reqs = [r for r in _declared(installed["wheel"]) if r.name != "fpxint"]
    assert {_extra(r) for r in reqs} == {"", "app", "llm", "bench", "test"}
    for r in reqs:
        assert r.name.lower() in pins, f"{r.name} is declared but not pinned in requirements*.txt"
        assert r.specifier.contains(pins[r.name.lower()]), f"{r.name}=={pins[r.name.lower()]} is outside {r}"


def test_every_third_party_import_is_declared(installed):
    """Each distribution that fpxint/ imports is a dependency; the CLI and the engine need no extra at import."""
    extras = {r.name.lower().replace("_", "-"): _extra(r) for r in _declared(installed["wheel"])}
    dist_of = md.packages_distributions()
    for path in (ROOT / "fpxint").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "fpxint":
                    continue
                dists = {d.lower().replace("_", "-") for d in dist_of.get(top, [])}
                declared = dists & set(extras)
                assert declared, f"{rel} imports {top} ({dists or 'not installed'}), which pyproject does not declare"
                optional = rel.startswith("fpxint/app/") or "plots" in rel or rel == "fpxint/reports.py"
                if id(node) in top_level and not optional:  # imported when the module is: must be core
                    assert any(extras[d] == "" for d in declared), f"{rel} imports {top} from the extra " \
                        f"{extras[next(iter(declared))]!r} at module level"
