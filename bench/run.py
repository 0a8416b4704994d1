"""Runs the benchmark suite: `python -m bench [--only expansion,forward] [--quick | --full | --smoke]`, or the
GPU check `python -m bench --gpu` (bench/gpu_check.py; writes docs/results/gpu.json).

`--smoke` runs every section on tiny inputs, one round, in seconds, writing only to a temporary folder:
it checks that each section still runs against today's engine (tests/test_bench.py runs it in the
default suite); its timings mean nothing.

Prints the machine first, then one table per section, every figure a ratio against a reference
timed in the same run; writes everything as JSON to artifacts/bench/ (gitignored) and, with
`--json FILE`, to FILE (the committed raw data under docs/results/ that a RESULTS table cites).

A section is a module in bench/ with `TITLE` and `run(opts) -> dict` (it prints its own tables and
returns what goes into the JSON); adding one is that module plus one line in SECTIONS, and its
`run` must honour `opts.smoke` (tiny inputs, no shared data needed, seconds).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import format_machine, machine_info, run_label, steady_allocator  # noqa: E402

SECTIONS = {  # name -> module; one line per section
    "expansion": "bench.expansion",
    "gemm": "bench.gemm",
    "integer": "bench.integer",
    "forward": "bench.forward",
    "peers": "bench.peers",
    "app_latency": "bench.app_latency",
    "page_compute": "bench.page_compute",
    "batch": "bench.batch",
    "basis": "bench.basis",
    "lm_first": "bench.lm_first",
}
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Options:
    quick: bool = False   # a smaller plan (about a minute per section)
    full: bool = False    # everything, including the slow cases left out by default
    smoke: bool = False   # tiny inputs, one round: does every section still run? (CI; timings meaningless)
    repeat: int | None = None  # rounds per measurement; None: the section's default
    threads: int | None = None


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, Options]:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run (default all): {', '.join(SECTIONS)}")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller plan, fewer rounds")
    size.add_argument("--full", action="store_true", help="every case, including the slow ones")
    size.add_argument("--smoke", action="store_true",
                      help="tiny inputs, one round, seconds: checks that every section still runs (results go to "
                           "a temporary folder unless --out is given)")
    p.add_argument("--repeat", type=int, default=None, help="rounds per measurement (best counts)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--cold-alloc", action="store_true",
                   help="leave glibc's allocator as is (freed memory goes back to the OS: page faults in timings)")
    p.add_argument("--gpu", action="store_true",
                   help="run bench/gpu_check.py instead (correctness and timings on CUDA; exits cleanly without one)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the JSON results (default artifacts/bench; with --smoke a new temporary folder)")
    p.add_argument("--table", type=Path, default=None, metavar="FILE",
                   help="print the markdown tables of a results file (--json's), e.g. for docs/RESULTS.md; runs nothing")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write the results to FILE, e.g. docs/results/bench_forward.json (the raw data of a "
                        "RESULTS table, committed; artifacts/ is not)")
    args = p.parse_args(argv)
    unknown = [s for s in args.only.split(",") if s and s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="fpxint-bench-smoke-")) if args.smoke else ROOT / "artifacts" / "bench"
    return args, Options(quick=args.quick, full=args.full, smoke=args.smoke,
                         repeat=args.repeat or (1 if args.smoke else None), threads=args.threads)


def print_tables(path: Path) -> int:
    """The markdown table of every section in a results file that has one (`markdown(result)`), under the
    machine and load of its run: RESULTS' tables are this output, so their numbers are the file's."""
    results = json.loads(path.read_text())
    for name, res in results["sections"].items():
        module = importlib.import_module(SECTIONS[name])
        if hasattr(module, "markdown"):
            print(f"<!-- python -m bench --table {path.as_posix()}: section {name} -->")
            print(f"*{run_label(results, name)}.*\n")
            print(module.markdown(res) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args, opts = parse(argv)
    if args.table:
        return print_tables(args.table)
    if args.gpu:
        from bench import gpu_check

        return gpu_check.main([])
    import torch

    if opts.threads:
        torch.set_num_threads(opts.threads)
    info = machine_info()
    # smoke runs inside the test process: leave its allocator alone
    info["allocator"] = "system default (cold)" if args.cold_alloc or opts.smoke else steady_allocator()
    print(format_machine(info), flush=True)
    print(f"allocator: {info['allocator']}", flush=True)
    load = (info["load_average"] or [0])[0]
    if load > (info["usable_cores"] or 1):
        print(f"WARNING: load average {load:.1f} > {info['usable_cores']} cores: other processes share the CPU; "
              "ratios are best-of-N but still noisy (multi-threaded torch ops suffer most; try --threads 1)",
              flush=True)
    results = {"machine": info, "options": vars(opts), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "sections": {}}
    for name in [s for s in args.only.split(",") if s]:
        module = importlib.import_module(SECTIONS[name])
        print(f"\n== {name}: {module.TITLE} ==", flush=True)
        t0 = time.perf_counter()
        res = module.run(opts)
        res["section_s"] = round(time.perf_counter() - t0, 1)
        # the load at the end too: the one at the start says nothing about what ran beside a long section
        res["load_average_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
        print(f"({name}: {res['section_s']:.0f} s)", flush=True)
        results["sections"][name] = res
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(results, indent=1, default=str)
    (args.out / f"bench-{stamp}.json").write_text(text)
    (args.out / "latest.json").write_text(text)
    if args.json:
        from fpxint.atomic import write_files

        write_files([(args.json, text + "\n")], overwrite=True)  # atomic: a reader never sees half a file
        print(f"results: {args.json}")
    print(f"\nresults: {args.out / f'bench-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
