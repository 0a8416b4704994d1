"""bench/gpu_check.py: its code paths on the CPU at tiny sizes; a clean exit without CUDA."""
import json

import torch

from bench import gpu_check


def test_gpu_check_paths_run_on_the_cpu():
    r = gpu_check.run(torch.device("cpu"), small=True)
    assert r["correct"] and len(r["layers"]) == 15 and all(row["equal_int64"] for row in r["layers"])
    assert r["simulate"]["rel_l2"] == 0.0  # same device, same code: bit-identical
    assert r["expansion"]["ratio"] > 0 and {row["config"] for row in r["forward"]} == set(gpu_check.CONFIGS)
    json.dumps(r, default=str)  # what write_json stores


def test_without_cuda_it_says_so_and_writes_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert "no CUDA device" in capsys.readouterr().out and not out.exists()


def test_write_json_is_atomic(tmp_path):
    out = tmp_path / "sub" / "gpu.json"
    gpu_check.write_json({"a": 1}, out)
    assert json.loads(out.read_text()) == {"a": 1} and [p.name for p in out.parent.iterdir()] == ["gpu.json"]
