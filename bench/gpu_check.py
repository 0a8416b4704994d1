"""One-shot GPU check: `python bench/gpu_check.py` or `python -m bench --gpu` (about 2-4 minutes).

On a CUDA machine it
1. checks correctness: integer accumulators computed on the GPU (int8 `torch._int_mm`, CUDA shape
   rules) equal the CPU int64 reference on a few layers (3x3, strided 1x1, grouped, Conv1d, Linear,
   8-bit full grid, asymmetric 8-bit through float64); the simulate forward of ResNet-50 on the GPU
   equals the CPU's within float tolerance (relative L2 < 1e-4);
2. measures (ratios in one run, CUDA-synchronized wall time, best of N): expanding every ResNet-50
   weight into 4 terms with `expand_tensor` vs one read-and-write pass over the same weights;
   simulate and integer forward (W4x2 A4x2, W4x1 A4x1, W8x1 A8x1) vs the BatchNorm-folded FP forward
   of ResNet-50 at batch 256; the app's default view (`views.expansion_metrics` of the default
   model and config) on the GPU;
3. writes docs/results/gpu.json (atomically).
Without CUDA it says so and exits with status 0, writing nothing. `run(device, small=True)` runs the
same code paths on tiny sizes (the CPU smoke test in tests/test_gpu_check.py).
The expansion on CUDA is the eager series vectorized over all groups (one set of passes per term,
no Python loop per element group); Triton would fuse those passes like the CPU kernel but adds a
dependency and a compiler to a path no GPU has run yet, so it waits for measurements.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/gpu_check.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import fpxint  # noqa: E402
from fpxint import ExpansionConfig, expand_layer  # noqa: E402
from fpxint.intref import int64_conv_reference, int64_linear_reference  # noqa: E402
from fpxint.layers import set_int_kernel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "gpu.json"
CONFIGS = {"W4x2 A4x2": (4, 2), "W4x1 A4x1": (4, 1), "W8x1 A8x1": (8, 1)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_ms(fn, device: torch.device, repeat: int) -> float:
    """Best wall time of `repeat` synchronized calls after one warm-up call, in ms."""
    fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def check_layers(device: torch.device) -> list[dict]:
    """Accumulators on `device` vs the int64 reference computed on the CPU, per layer and config."""
    torch.manual_seed(0)
    cases = [("conv3x3", nn.Conv2d(32, 64, 3, padding=1), (8, 32, 14, 14)),
             ("conv1x1_s2", nn.Conv2d(64, 128, 1, stride=2), (8, 64, 14, 14)),
             ("conv_grouped", nn.Conv2d(32, 32, 3, padding=1, groups=8), (4, 32, 9, 9)),
             ("conv1d", nn.Conv1d(12, 24, 5, padding=2), (4, 12, 33)),
             ("linear", nn.Linear(200, 100), (20, 200))]
    cfgs = [ExpansionConfig(w_bits=4, w_terms=2, a_bits=4, a_terms=2),
            ExpansionConfig(w_bits=8, w_terms=1, a_bits=8, a_terms=2, w_grid="full", a_grid="full"),
            ExpansionConfig(w_bits=8, w_terms=2, a_bits=8, a_terms=1, a_grid="asymmetric")]
    rows = []
    for name, m, shape in cases:
        x = torch.randn(shape)
        for cfg in cfgs:
            layer = expand_layer(m, cfg).to(device)
            xd = x.to(device)
            with torch.no_grad():
                accs = layer.integer_accumulators(layer.prepared_input(xd), kernel="auto")
                xterms = layer.activation_terms(layer.prepared_input(xd))
            ok = True
            for (i, j), (acc, _) in accs.items():
                xq = xterms[j][0].cpu().round().to(torch.int64)
                wq = layer.w_centered(i).cpu().to(torch.int64)
                if isinstance(m, nn.Linear):
                    ref = int64_linear_reference(xq, wq)
                else:
                    ref = int64_conv_reference(xq, wq, layer.dim, layer.stride, layer.padding, layer.dilation, layer.groups)
                ok &= bool(torch.equal(acc.cpu().to(torch.int64), ref * int(layer.pairs[i, j])))
            rows.append({"layer": name, "config": cfg.label(), "grid": cfg.a_grid, "equal_int64": ok})
    return rows


def _resnet50(small: bool) -> tuple[nn.Module, int]:
    import torchvision

    if small:
        return torchvision.models.resnet18(weights=None, num_classes=10).eval(), 32
    return torchvision.models.resnet50(weights=None).eval(), 224


def check_simulate(device: torch.device, small: bool) -> dict:
    model, size = _resnet50(small)
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    cfg = ExpansionConfig(w_bits=4, w_terms=2, a_bits=4, a_terms=2)
    with torch.inference_mode():
        y_cpu = fpxint.expand(model, cfg, device="cpu")(x)
        y_dev = fpxint.expand(model, cfg, device=device)(x.to(device)).cpu()
    rel = float((y_dev - y_cpu).norm() / y_cpu.norm())
    return {"model": "resnet18 (small)" if small else "resnet50", "rel_l2": rel, "ok": rel < 1e-4}


def measure_expansion(device: torch.device, small: bool) -> dict:
    from fpxint.model import expandable_layers

    model, _ = _resnet50(small)
    ws = [m.weight.detach().to(device) for _, m in expandable_layers(model)]
    ref = best_ms(lambda: [w * 2.0 for w in ws], device, 5)
    exp = best_ms(lambda: [fpxint.expand_tensor(w, 4, 4, "per_channel") for w in ws], device, 3)
    return {"weights": sum(w.numel() for w in ws), "pass_ms": ref, "expand_tensor_ms": exp, "ratio": exp / ref}


def measure_forward(device: torch.device, small: bool) -> list[dict]:
    model, size = _resnet50(small)
    batch = 8 if small else 256
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    fp = fpxint.fold_batchnorm(model).to(device).eval()
    rows = []
    repeat = 2 if small else 5
    with torch.inference_mode():
        fp_ms = best_ms(lambda: fp(x), device, repeat)
        for label, (bits, k) in CONFIGS.items():
            cfg = ExpansionConfig(w_bits=bits, w_terms=k, a_bits=bits, a_terms=k)
            q = fpxint.expand(model, cfg, device=device)
            sim = best_ms(lambda: q(x), device, repeat)
            fpxint.set_mode(q, "integer")
            integer = best_ms(lambda: set_int_kernel(q, "auto")(x), device, repeat)
            rows.append({"config": label, "batch": batch, "fp_ms": fp_ms, "simulate_x": sim / fp_ms,
                         "integer_x": integer / fp_ms})
            del q
    return rows


def measure_default_view(device: torch.device) -> dict:
    from fpxint import views
    from fpxint.data import load_data
    from fpxint.zoo import DEFAULT_MODEL, find_shared, load_model

    shared = find_shared()  # an edge: may read FPXINT_SHARED
    lm = load_model(DEFAULT_MODEL, shared_dir=shared, device=device.type)
    data = load_data("digits", lm.spec, limit=500, seed=0) if lm.spec.dataset == "digits" else None
    if data is None:
        return {"skipped": f"default model {DEFAULT_MODEL} has no bundled images here"}
    t0 = time.perf_counter()
    r = views.expansion_metrics(lm, data, ExpansionConfig(), device.type)
    return {"model": DEFAULT_MODEL, "seconds": time.perf_counter() - t0, "n_images": r["n_images"],
            "integer_timing": r.get("integer_timing")}


def run(device: torch.device, small: bool = False) -> dict:
    """Every check and measurement on `device`; small=True: tiny sizes (the CPU smoke test)."""
    t0 = time.perf_counter()
    info = {"device": str(device), "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
            "torch": torch.__version__, "small": small}
    layers = check_layers(device)
    print(f"layers: {sum(r['equal_int64'] for r in layers)}/{len(layers)} equal to the CPU int64 reference", flush=True)
    sim = check_simulate(device, small)
    print(f"simulate vs CPU: relative L2 {sim['rel_l2']:.2e} ({'ok' if sim['ok'] else 'FAILED'})", flush=True)
    exp = measure_expansion(device, small)
    print(f"expand_tensor, 4 terms, all weights: {exp['ratio']:.2f}x one memory pass", flush=True)
    fwd = measure_forward(device, small)
    for r in fwd:
        print(f"forward batch {r['batch']} {r['config']}: simulate {r['simulate_x']:.2f}x, integer "
              f"{r['integer_x']:.2f}x FP ({r['fp_ms']:.1f} ms)", flush=True)
    view = measure_default_view(device)
    print(f"default view: {view}", flush=True)
    ok = all(r["equal_int64"] for r in layers) and sim["ok"]
    return {"machine": info, "correct": ok, "layers": layers, "simulate": sim, "expansion": exp, "forward": fwd,
            "default_view": view, "seconds": time.perf_counter() - t0}


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON results (default {OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU check needs one; nothing measured, nothing written")
        return 0
    result = run(torch.device("cuda"))
    write_json(result, args.out)
    print(f"{'all checks passed' if result['correct'] else 'CHECKS FAILED'}; results: {args.out}")
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
