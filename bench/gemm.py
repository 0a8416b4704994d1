"""GEMM microbenchmark: int8 x int8 -> int32 `torch._int_mm` and float64 `@` against float32 `@`.

Shapes are convolution GEMMs of ResNets (M = batch x output pixels, K = Cin x kernel, N = Cout) and
one classifier (small M). Operands are integers in [-7, 7] (4-bit terms); every int8 result is
checked equal to an int64 matmul on its first rows (the full int64 product is too slow to time).
"""
from __future__ import annotations

import torch

from bench.common import markdown as md_table
from bench.common import ratio, table, time_interleaved

TITLE = "int8 torch._int_mm and float64 @ vs float32 @ (integer-valued operands)"
SHAPES = [(8192, 1152, 128), (25088, 2304, 256), (1568, 4608, 512), (3136, 576, 64), (64, 512, 1000)]
SMOKE_SHAPES = [(64, 72, 16)]


def run(opts) -> dict:
    shapes = SMOKE_SHAPES if opts.smoke else SHAPES[:1] + SHAPES[3:] if opts.quick else SHAPES
    g = torch.Generator().manual_seed(0)
    rows = []
    for m, k, n in shapes:
        a = torch.randint(-7, 8, (m, k), generator=g, dtype=torch.int8)
        b = torch.randint(-7, 8, (k, n), generator=g, dtype=torch.int8)
        af, bf, ad, bd = a.float(), b.float(), a.double(), b.double()
        got = torch._int_mm(a, b)
        exact = bool(torch.equal(got[:64].to(torch.int64), a[:64].to(torch.int64) @ b.to(torch.int64)))
        t = time_interleaved({"fp32": lambda: af @ bf, "int8": lambda: torch._int_mm(a, b), "fp64": lambda: ad @ bd},
                             repeat=opts.repeat or 3, warmup=1)
        rows.append({"shape": f"{m} x {k} x {n}", "fp32_ms": t["fp32"].best_s * 1e3,
                     "int8_x": ratio(t["int8"], t["fp32"]), "fp64_x": ratio(t["fp64"], t["fp32"]), "exact": exact})
        print(f"  {rows[-1]['shape']}: int8 {rows[-1]['int8_x']:.2f}x, float64 {rows[-1]['fp64_x']:.2f}x fp32", flush=True)
    print()
    print(table(rows, [("shape", "M x K x N", ""), ("fp32_ms", "fp32 ms", ".2f"), ("int8_x", "_int_mm / fp32", ".2f"),
                       ("fp64_x", "float64 / fp32", ".2f"), ("exact", "int8 = int64", "")]))
    return {"rows": rows}


def markdown(res: dict) -> str:
    """RESULTS' GEMM table from a results file (`python -m bench --table FILE`)."""
    return md_table(res["rows"], [("shape", "M x K x N", ""), ("fp32_ms", "fp32 `@` ms", ".2f"),
                                  ("int8_x", "`_int_mm` / fp32", ".2f"), ("fp64_x", "float64 `@` / fp32", ".2f"),
                                  ("exact", "`_int_mm` = int64", "")])
