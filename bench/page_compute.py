"""Page computations: what the Convergence and Accuracy pages compute on ResNet-20, before vs after.

The pages' defaults: `views.convergence` (bits 2, 3, 4; up to 4 terms) and `views.accuracy` (bits 2, 3,
4; up to 3 terms; cost columns and the equal-budget grid) on the app's default 500 stratified CIFAR-10
test images, default config, CPU. "after" is this checkout; "before" is the engine at a git revision
(`--before REV`, or the environment variable BENCH_BEFORE for `python -m bench --only page_compute`),
extracted with `git archive` into a temporary folder. Each timing runs in a fresh subprocess (model and
images loaded before the clock starts), before and after alternating, best of N: one run, one machine
load, so the ratio is what to read. The results of both must agree: their numbers are compared too.

    python -m bench.page_compute --before 563f642 --json docs/results/bench_page_compute.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.common import format_machine, machine_info, table

TITLE = "page computations: Convergence and Accuracy on ResNet-20, before vs after (fresh process each)"
ROOT = Path(__file__).resolve().parents[1]

# Runs in a subprocess with PYTHONPATH set to the checkout under test; prints one JSON line.
DRIVER = r"""
import json, sys, time
import torch
from fpxint import ExpansionConfig, views
from fpxint.data import load_data
from fpxint.zoo import cache_dir, find_shared, load_model
n_images = int(sys.argv[1])
shared = find_shared()
lm = load_model("resnet20", shared_dir=shared)
data = load_data(shared / "data" / "cifar10-test", lm.spec, limit=n_images, cache_dir=cache_dir())
cfg = ExpansionConfig()
torch.manual_seed(0)
t0 = time.perf_counter()
w, o = views.convergence(lm, data, cfg, (2, 3, 4), 4, "cpu")
t1 = time.perf_counter()
a = views.accuracy(lm, data, cfg, (2, 3, 4), 3, "cpu", force=True)
t2 = time.perf_counter()
g = a["grid"]
print(json.dumps({"convergence_s": t1 - t0, "accuracy_s": t2 - t1,
                  "values": {"weight_sqnr_db": w.sqnr_db.tolist(), "output_sqnr_db": o.sqnr_db.tolist(),
                             "output_kl": o.kl.tolist(), "top1": g.top1.tolist(), "agreement": g.agreement.tolist(),
                             "kl": g.kl.tolist(), "bits_per_weight": g.bits_per_weight.tolist(),
                             "bops": [float(b) for b in g.bops], "budget_top1": a["budget"].top1.tolist()}}))
"""


def _checkout(rev: str, into: Path) -> Path:
    """The tracked files of `rev` under `into` (git archive: no worktree, nothing left in the repository)."""
    tar = into / "src.tar"
    with open(tar, "wb") as fh:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev], stdout=fh, check=True)
    with tarfile.open(tar) as t:
        t.extractall(into / "tree", filter="data")
    return into / "tree"


def _time(root: Path, n_images: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", DRIVER, str(n_images)], cwd=root, env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the driver failed under {root}: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _max_diff(a: dict, b: dict) -> dict[str, float]:
    """Largest |before - after| per value list (inf == inf counts as 0)."""
    out = {}
    for k in a:
        d = [0.0 if x == y else abs(x - y) for x, y in zip(a[k], b[k])]
        out[k] = max(d, default=0.0) if len(a[k]) == len(b[k]) else float("nan")
    return out


def measure(before: str | None, n_images: int, rounds: int) -> dict:
    from fpxint.zoo import find_shared

    if find_shared() is None:
        return {"skipped": "shared folder not found (set FPXINT_SHARED)"}
    runs: dict[str, list[dict]] = {"after": [], "before": []}
    with tempfile.TemporaryDirectory(prefix="fpxint-bench-") as tmp:
        roots = {"after": ROOT}
        if before:
            roots["before"] = _checkout(before, Path(tmp))
        order = list(roots)
        for r in range(rounds):
            for which in (order if r % 2 == 0 else order[::-1]):  # alternate who goes first
                runs[which].append(_time(roots[which], n_images))
                print(f"  round {r + 1} {which}: convergence {runs[which][-1]['convergence_s']:.1f} s, "
                      f"accuracy {runs[which][-1]['accuracy_s']:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    rows, res = [], {"n_images": n_images, "rounds": rounds, "before_rev": before,
                     "load_average_end": [round(v, 2) for v in os.getloadavg()]}
    for page in ("convergence_s", "accuracy_s"):
        after = min(x[page] for x in runs["after"])
        row = {"page": page[:-2], "after_s": after}
        if runs["before"]:
            b = min(x[page] for x in runs["before"])
            row.update(before_s=b, speedup=b / after)
        rows.append(row)
    res["rows"] = rows
    if runs["before"]:
        res["max_abs_diff"] = _max_diff(runs["before"][0]["values"], runs["after"][0]["values"])
    cols = [("page", "page", "s"), ("after_s", "after (s)", ".2f")]
    if before:
        cols += [("before_s", "before (s)", ".2f"), ("speedup", "before / after", ".2f")]
    print(table(rows, cols))
    if "max_abs_diff" in res:
        print("max |before - after| of the results: " + ", ".join(f"{k} {v:.3g}" for k, v in res["max_abs_diff"].items()))
    return res


def run(opts) -> dict:
    """Section entry of `python -m bench`: BENCH_BEFORE=REV adds the before column."""
    if opts.smoke:  # one round on 8 images, this revision only: do the pages' computations still run?
        return measure(None, 8, 1)
    return measure(os.environ.get("BENCH_BEFORE"), 200 if opts.quick else 500, opts.repeat or (1 if opts.quick else 2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.page_compute", description=__doc__.split("\n\n")[0])
    p.add_argument("--before", metavar="REV", help="git revision to time as 'before' (e.g. a commit before the change)")
    p.add_argument("--images", type=int, default=500, help="CIFAR-10 test images (default 500, the app's default)")
    p.add_argument("--repeat", type=int, default=2, help="rounds per side, best counts (default 2)")
    p.add_argument("--json", type=Path, help="also write the result and the machine to this file")
    args = p.parse_args(argv)
    info = machine_info()
    print(format_machine(info), flush=True)
    t0 = time.perf_counter()
    res = measure(args.before, args.images, args.repeat)
    res.update(machine=info, section_s=round(time.perf_counter() - t0, 1), started=time.strftime("%Y-%m-%dT%H:%M:%S"),
               command="python -m bench.page_compute " + " ".join(argv if argv is not None else sys.argv[1:]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(res, indent=1, default=str) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
