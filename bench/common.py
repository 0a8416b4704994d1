"""Shared helpers of the benchmark suite: the machine, interleaved timing, ratios, tables.

Every figure the suite prints is a ratio against a reference timed in the same run, interleaved
with the thing it is compared to (round-robin, alternating order), best of N: on a shared machine
absolute times drift by 2-10x between minutes, ratios measured side by side much less.
"""
from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch


def machine_info() -> dict:
    """CPU model and cores, torch version and threads, device, load: printed before any figure."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": "cpu",
        "cuda_available": torch.cuda.is_available(),
        "python": platform.python_version(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def format_machine(info: dict) -> str:
    return (f"machine: {info['cpu']}, {info['usable_cores']} usable of {info['logical_cores']} cores | "
            f"torch {info['torch']} ({info['cpu_capability']}), {info['torch_threads']} threads | "
            f"device {info['device']} | load average {info['load_average']}")


@dataclass
class Timing:
    """Wall-clock and process CPU time (all threads) of one timed function, best of `runs`."""

    best_s: float
    median_s: float
    cpu_best_s: float
    runs: int
    walls: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"best_s": self.best_s, "median_s": self.median_s, "cpu_best_s": self.cpu_best_s, "runs": self.runs}


def steady_allocator() -> str:
    """Keeps freed memory in the process (glibc): after warm-up no call pays page faults.

    Without it glibc hands large freed blocks back to the OS, and whichever function runs after a
    big one pays ~25k page faults for 100 MB (0.1-0.5 s here): the reference pass, cheapest of all,
    then looks 10x slower at random. Blocks above 32 MB are still mapped fresh on each call.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)
        return "glibc, freed memory kept (mmap threshold 32 MB, no trimming)" if ok else "glibc defaults"
    except (OSError, AttributeError):
        return "system default"


def time_interleaved(fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 0,
                     inner: dict[str, int] | None = None) -> dict[str, Timing]:
    """Times every function `repeat` rounds, round-robin (order reversed every other round).

    Args:
        fns: name -> zero-argument callable; results are dropped before the next call.
        repeat: rounds; each function's best call counts.
        warmup: untimed rounds first (kernel builds, caches, allocator warm-up).
        inner: name -> calls per round for cheap functions (more samples of the fast ones without
            more rounds of the slow ones).
    """
    inner = inner or {}
    for _ in range(warmup):
        for f in fns.values():
            f()
    walls: dict[str, list[float]] = {k: [] for k in fns}
    cpus: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    gc.collect()  # once: a full collection costs 0.1-1 s with torch loaded, too much per call
    was_enabled = gc.isenabled()
    gc.disable()  # no collection pauses inside the timed calls (they make no reference cycles)
    try:
        for r in range(repeat):
            for name in names if r % 2 == 0 else names[::-1]:
                for _ in range(inner.get(name, 1)):
                    c0, t0 = time.process_time(), time.perf_counter()
                    out = fns[name]()
                    t1, c1 = time.perf_counter(), time.process_time()
                    del out
                    walls[name].append(t1 - t0)
                    cpus[name].append(c1 - c0)
    finally:
        if was_enabled:
            gc.enable()
    return {k: Timing(min(walls[k]), statistics.median(walls[k]), min(cpus[k]), len(walls[k]), walls[k])
            for k in fns}


def ratio(t: Timing, ref: Timing) -> float:
    """Best wall time over the reference's best wall time."""
    return t.best_s / ref.best_s


def cpu_ratio(t: Timing, ref: Timing) -> float:
    """Best process CPU time over the reference's: less sensitive to other processes on the cores."""
    return t.cpu_best_s / ref.cpu_best_s if ref.cpu_best_s > 0 else float("nan")


def table(rows: Iterable[dict], columns: list[tuple[str, str, str]]) -> str:
    """Fixed-width text table; columns are (key, header, format spec), e.g. ("ratio", "x ref", ".2f")."""
    rows = list(rows)
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            v = row.get(key)
            line.append("-" if v is None else format(v, spec) if spec else str(v))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    out = []
    for n, c in enumerate(cells):
        out.append("  ".join(s.rjust(w) if n and _numeric(s) else s.ljust(w) for s, w in zip(c, widths)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown(rows: Iterable[dict], columns: list[tuple[str, str, str]]) -> str:
    """A markdown table of `rows`, columns as in `table`: what `python -m bench --table FILE` prints for
    RESULTS, so a table there holds exactly the numbers of its committed raw file."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for key, _, spec in columns:
            v = row.get(key)
            cells.append("-" if v is None else format(v, spec) if spec else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_label(results: dict, section: str) -> str:
    """Machine, threads and load of one section of a results file: printed above each of its tables."""
    m, sec = results["machine"], results["sections"][section]
    end = sec.get("load_average_end")
    return (f"{m['cpu']} ({m['cpu_capability']}), {m['usable_cores']} cores, torch {m['torch']}, "
            f"{m['torch_threads']} thread{'s' if m['torch_threads'] != 1 else ''}; started {results['started']}; "
            f"load average (1/5/15 min) {m['load_average']} at the run's start"
            + (f", {end} at the end of this section" if end else "") + f"; {sec['section_s']:.0f} s")


def _numeric(s: str) -> bool:
    return s.replace(".", "", 1).replace("-", "", 1).replace("x", "").replace("e", "").replace("+", "").isdigit()


def verdict(value: float, target: float) -> str:
    return "MEETS" if value <= target else "MISSES"
