"""The CLI and the Python API against hostile input: a table of bad inputs, each run as a real
subprocess (`python -m fpxint`), must give exit code 2, exactly one line on stderr and no traceback;
`--json` output must be strict JSON; runs over the memory limit are refused unless --no-limits."""
from __future__ import annotations

import json
import math
import re
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from fpxint.zoo import ModelLoadError, load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One bad file of each kind."""
    d = tmp_path_factory.mktemp("bad")
    state = load_model("digits_cnn").model.state_dict()
    good = d / "good.pth"
    torch.save(state, good)
    blob = good.read_bytes()
    (d / "truncated.pth").write_bytes(blob[: len(blob) // 2])
    big = {k: v.clone() for k, v in state.items()}
    big["features.0.0.weight"].view(-1)[0] = 3e38
    torch.save(big, d / "huge.pth")
    nan = {k: v.clone() for k, v in state.items()}
    nan["classifier.weight"].view(-1)[3] = float("nan")
    torch.save(nan, d / "nan.pth")
    torch.save({k: v.to(torch.int32) for k, v in state.items()}, d / "int32.pth")
    (d / "noconfig.json").write_text(json.dumps({"format": "fpxint-expanded/1", "model": "digits_cnn"}))
    (d / "noconfig.safetensors").write_bytes(b"")
    deep = "[" * 100_000 + "]" * 100_000
    (d / "deep.json").write_text(deep)
    (d / "deep.safetensors").write_bytes(b"")
    (d / "deepcfg.json").write_text('{"a": ' + deep + "}")
    with zipfile.ZipFile(d / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("0/zeros.png", "w", force_zip64=True) as f:
            block = b"\x00" * (1 << 20)
            for _ in range(256):
                f.write(block)
    (d / "notzip.zip").write_text("hello")
    return {p.stem if p.suffix != ".zip" else p.name: p for p in d.iterdir()}


BAD = [  # (argv with {name} placeholders, fragment of the one-line message)
    ("eval digits_cnn --weights {truncated}", "truncated or damaged"),
    ("eval digits_cnn --weights {huge}", "holds a value of 3e+38"),
    ("eval digits_cnn --weights {nan}", "holds NaN or Inf values"),
    ("eval digits_cnn --weights {int32}", "holds int32 tensors where the model has float32"),
    ("eval --expanded {noconfig}", ""),  # an old or hand-made JSON without 'config': any one-line refusal
    ("eval --expanded {deep}", ""),
    ("eval digits_cnn --config {deepcfg}", "nested too deeply"),
    ("eval digits_cnn --data {bomb.zip}", "none of the 1 images"),
    ("eval digits_cnn --data {notzip.zip}", "not a readable zip archive"),
    ("eval digits_cnn --w-bits ²", "invalid int value"),
    ("eval digits_cnn --limit " + "9" * 5000, "invalid int value"),
    ("eval digits_cnn --level galaxy", "invalid choice"),
    ("eval nosuchmodel", "nosuchmodel"),
    ("eval digits_cnn --w-bits 3 --w-terms 99", "w_terms"),
    ("sweep digits_cnn --pairs 4:x", "pairs are W:A bits"),
]


def _run(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fpxint", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("argv,fragment", BAD, ids=[a.split("{")[-1].rstrip("}")[:30] for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_no_traceback(files, argv, fragment):
    args = [a.format(**{k.replace(".", "_"): v for k, v in files.items()}) if "{" in a else a
            for a in argv.replace("{bomb.zip}", "{bomb_zip}").replace("{notzip.zip}", "{notzip_zip}").split(" ")]
    out = _run(args + ["-q"])
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-1500:]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-1500:]
    assert "Traceback" not in out.stderr and fragment in lines[0]
    assert len(lines[0]) < 700


def test_memory_limit_refuses_the_cli_run_and_no_limits_overrides():
    out = _run(["eval", "digits_cnn", "--limit", "50", "-q"], {"FPXINT_MAX_RUN_MB": "1"})
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "would need about" in out.stderr and "(limit 1 MB)" in out.stderr and "--no-limits" in out.stderr
    ok = _run(["eval", "digits_cnn", "--limit", "50", "-q", "--no-limits", "--json"], {"FPXINT_MAX_RUN_MB": "1"})
    assert ok.returncode == 0 and json.loads(ok.stdout)["n_images"] == 50


def _strict_loads(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict(tmp_path):
    """An untrained model's logits can tie: the SQNR is inf-like or None, the top-1 of unlabeled data
    None; whatever the values, the output must parse with NaN / Infinity refused."""
    out = _run(["eval", "digits_cnn", "--limit", "40", "-q", "--json", "--w-bits", "1", "--a-bits", "1",
                "--terms", "1"])
    assert out.returncode == 0, out.stderr
    r = _strict_loads(out.stdout)
    assert r["n_images"] == 40
    sweep = _run(["sweep", "digits_cnn", "--limit", "40", "-q", "--json", "--bits", "1,8", "--terms", "1",
                  "--out", str(tmp_path / "s")])
    assert sweep.returncode == 0, sweep.stderr
    _strict_loads(sweep.stdout)
    _strict_loads((tmp_path / "s.json").read_text())


def test_strict_json_turns_nan_and_inf_into_null():
    from fpxint.cli.args import dumps

    text = dumps({"a": float("nan"), "b": [1.0, float("inf"), -math.inf], "c": {"d": 2.5}})
    assert _strict_loads(text) == {"a": None, "b": [1.0, None, None], "c": {"d": 2.5}}


@pytest.mark.parametrize("kind,fragment", [("truncated", "truncated or damaged"), ("huge", "3e+38"),
                                           ("int32", "int32 tensors"), ("nan", "NaN or Inf")])
def test_api_refuses_bad_checkpoints_with_one_line(files, kind, fragment):
    with pytest.raises(ModelLoadError, match=re.escape(fragment)) as e:
        load_model("digits_cnn", files[kind])
    assert "\n" not in str(e.value)
