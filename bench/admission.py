"""Calibration of fpxint.admission.estimate: estimated vs measured peak memory and time of real runs.

    python -m bench.admission            # the default cases (about a minute on 2 cores)
    python -m bench.admission --json out.json

Each case runs in a fresh subprocess (one torch thread): build the model (random weights: memory and
time do not depend on their values), make N random images, reset the peak-RSS counter
(/proc/self/clear_refs), then do what the app's Expand page does (FP logits, expand, expanded logits)
and read the peak (VmHWM) minus the RSS just before the images were made. Printed: the estimate, the
measurement and their ratio (>= 1 means the estimate is conservative).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
CASES = [  # (model, config changes, images, batch)
    ("resnet20", {"w_bits": 4, "w_terms": 2, "a_bits": 4, "a_terms": 2}, 500, 256),
    ("resnet20", {"w_bits": 8, "w_terms": 4, "a_bits": 8, "a_terms": 4, "mode": "integer"}, 32, 32),
    ("resnet18", {"w_bits": 4, "w_terms": 2, "a_bits": 4, "a_terms": 2}, 4, 4),
    ("resnet18", {"w_bits": 4, "w_terms": 2, "a_bits": 4, "a_terms": 2, "mode": "integer"}, 1, 1),
    ("resnet18", {"w_bits": 8, "w_terms": 6, "a_bits": 8, "a_terms": 6, "mode": "integer"}, 1, 1),
    ("vit_b_16", {"w_bits": 8, "w_terms": 4, "a_bits": 8, "a_terms": 4, "level": "model"}, 1, 1),
]

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from fpxint import ExpansionConfig, analysis
from fpxint.zoo import get_spec

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

name, cfg_json, n, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
spec = get_spec(name)
torch.manual_seed(0)
model = spec.build().eval()
cfg = ExpansionConfig.from_json(cfg_json)
with torch.no_grad():
    model(torch.zeros((1, *spec.input_size)))  # first-call allocations of the FP path are not the run's
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current RSS
t0 = time.perf_counter()
images = torch.randint(0, 256, (n, *spec.input_size), dtype=torch.uint8).float().div_(255)
fp, _ = analysis.logits_of(model, (images, None), batch, "cpu")
res = analysis.evaluate(model, cfg, (images, None), fp, batch, "cpu")
print(json.dumps({"peak_bytes": status("VmHWM") - base, "seconds": time.perf_counter() - t0}))
"""


def measure(name: str, cfg_json: str, n: int, batch: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, name, cfg_json, str(n), str(batch)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(cases=CASES) -> list[dict]:
    from fpxint import ExpansionConfig
    from fpxint.admission import estimate, profile
    from fpxint.zoo import get_spec

    rows = []
    for name, changes, n, batch in cases:
        cfg = ExpansionConfig(**changes)
        est = estimate(profile(get_spec(name)), cfg, n, batch)
        got = measure(name, cfg.to_json(), n, batch)
        rows.append({"model": name, "config": f"{cfg.label()} {cfg.mode}", "images": n, "batch": batch,
                     "est_mb": est.bytes / 2**20, "measured_mb": got["peak_bytes"] / 2**20,
                     "mem_ratio": est.bytes / max(got["peak_bytes"], 1), "est_s": est.seconds,
                     "measured_s": got["seconds"], "time_ratio": est.seconds / got["seconds"]})
        r = rows[-1]
        print(f"{name:<9} {r['config']:<22} n={n:<4} b={batch:<4} memory est {r['est_mb']:8.0f} MB "
              f"measured {r['measured_mb']:8.0f} MB ratio {r['mem_ratio']:5.2f} | time est {r['est_s']:7.1f} s "
              f"measured {r['measured_s']:7.1f} s ratio {r['time_ratio']:5.2f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    rows = run()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
