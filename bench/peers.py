"""Peers: what a user would pick instead of fpxint for post-training quantization without data.

Compared on the CIFAR-10 ResNet-20 / ResNet-32 checkpoints, on the same stratified images as FP:
  - rtn: an independent round-to-nearest fake-quant written here (per-channel symmetric weights,
    per-sample dynamic symmetric activations on each Conv2d/Linear input; BatchNorm left as is);
  - optimum-quanto: `quantize(model, weights=qint8|qint4|qint2)` + `freeze` (Conv2d and Linear);
    its activations need a `Calibration()` pass over data (static scales), so W8A8 is shown
    uncalibrated, as a user without data would get it;
  - torchao: `quantize_(model, Int8WeightOnlyConfig() | Int8DynamicActivationInt8WeightConfig() |
    IntxWeightOnlyConfig(int4) | Int4WeightOnlyConfig())`; its default filter takes nn.Linear only,
    and its Int8Tensor has no aten.convolution on CPU (asked to take Conv2d it raises), so on these
    ResNets it quantizes the final fc alone: the "quantized" column says what each peer touched;
  - fpxint at matched cost: W4x2 (two 4-bit terms: int8 storage) vs int8, W4x1 vs int4, A8 / A4x2.
Columns: time to quantize (best of 3, one model copy each), top-1 vs FP on the same images, and the
forward time of one batch as a ratio to FP, interleaved, best of N (fpxint here is the float
simulation of the integer terms, not an integer kernel).
"""
from __future__ import annotations

import copy
import time
import warnings

import torch
from torch import nn

from bench.common import table, time_interleaved

TITLE = "peers (optimum-quanto, torchao, plain RTN) vs fpxint at matched cost: quantize time, top-1, forward"


# ---- an independent round-to-nearest fake-quant (no fpxint code) ---------------------------------

def _rtn(x: torch.Tensor, bits: int, dims: tuple[int, ...]) -> torch.Tensor:
    """Symmetric round-to-nearest with one max-abs scale per slice over `dims` (the reduced dims)."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / qmax
    return (x / scale).round().clamp(-qmax, qmax) * scale


def rtn_quantize(model: nn.Module, w_bits: int, a_bits: int | None) -> nn.Module:
    """Fake-quantizes every Conv2d/Linear in place: weights per output channel, inputs per sample."""
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            w = mod.weight.data
            mod.weight.data = _rtn(w, w_bits, tuple(range(1, w.dim())))
            mod.rtn_fake_quant = True
            if a_bits is not None:
                mod.register_forward_pre_hook(
                    lambda m, args, b=a_bits: (_rtn(args[0], b, tuple(range(1, args[0].dim()))),))
    return model


# ---- peers ------------------------------------------------------------------------------------------

def quanto_q(weights: str, activations: str | None = None):
    def q(model):
        import optimum.quanto as oq
        oq.quantize(model, weights=getattr(oq, weights), activations=getattr(oq, activations) if activations else None)
        oq.freeze(model)
        return model
    return q


def torchao_q(config_name: str, **kw):
    def q(model):
        import torchao.quantization as ao
        ao.quantize_(model, getattr(ao, config_name)(**kw))
        return model
    return q


def fpxint_q(**cfg):
    def q(model):
        from fpxint import ExpansionConfig
        from fpxint.model import expand
        # symmetric activations, the RTN peer's grid (and the default when the tables were measured)
        return expand(model, ExpansionConfig(**{"a_grid": "symmetric", **cfg}))
    return q


def rtn_q(w, a):
    return lambda model: rtn_quantize(model, w, a)


# name, storage bits per weight, activation spec, quantizer
PEERS = [
    ("rtn W8 (A FP)", 8, "FP", rtn_q(8, None)),
    ("rtn W8A8", 8, "8 dyn", rtn_q(8, 8)),
    ("rtn W4 (A FP)", 4, "FP", rtn_q(4, None)),
    ("rtn W4A8", 4, "8 dyn", rtn_q(4, 8)),
    ("rtn W4A4", 4, "4 dyn", rtn_q(4, 4)),
    ("rtn W2 (A FP)", 2, "FP", rtn_q(2, None)),
    ("quanto qint8 weights", 8, "FP", quanto_q("qint8")),
    ("quanto qint4 weights", 4, "FP", quanto_q("qint4")),
    ("quanto qint2 weights", 2, "FP", quanto_q("qint2")),
    ("quanto W8A8, uncalibrated", 8, "8 static (no calib.)", quanto_q("qint8", "qint8")),
    ("torchao Int8WeightOnly", 8, "FP", torchao_q("Int8WeightOnlyConfig")),
    ("torchao Int8DynAct-Int8W", 8, "8 dyn", torchao_q("Int8DynamicActivationInt8WeightConfig")),
    ("torchao IntxWeightOnly int4", 4, "FP", torchao_q("IntxWeightOnlyConfig", weight_dtype=torch.int4)),
    ("torchao Int4WeightOnly", 4, "FP", torchao_q("Int4WeightOnlyConfig")),
    ("fpxint W8x1 (A FP)", 8, "FP", fpxint_q(w_bits=8, w_terms=1, truncation="weight_only")),
    ("fpxint W4x2 (A FP)", 8, "FP", fpxint_q(w_bits=4, w_terms=2, truncation="weight_only")),
    # the same 8 bits of storage on the full 4-bit grid [-8, 7]: the level the symmetric grid leaves out
    ("fpxint W4x2 full grid (A FP)", 8, "FP", fpxint_q(w_bits=4, w_terms=2, w_grid="full", truncation="weight_only")),
    ("fpxint W8x1 A8x1", 8, "8 dyn", fpxint_q(w_bits=8, w_terms=1, a_bits=8, a_terms=1)),
    ("fpxint W4x2 A8x1", 8, "8 dyn", fpxint_q(w_bits=4, w_terms=2, a_bits=8, a_terms=1)),
    ("fpxint W4x2 A4x2", 8, "4x2 dyn", fpxint_q(w_bits=4, w_terms=2, a_bits=4, a_terms=2)),
    ("fpxint W4x1 (A FP)", 4, "FP", fpxint_q(w_bits=4, w_terms=1, truncation="weight_only")),
    ("fpxint W4x1 A8x1", 4, "8 dyn", fpxint_q(w_bits=4, w_terms=1, a_bits=8, a_terms=1)),
    ("fpxint W4x1 A4x2", 4, "4x2 dyn", fpxint_q(w_bits=4, w_terms=1, a_bits=4, a_terms=2)),
    ("fpxint W2x2 (A FP)", 4, "FP", fpxint_q(w_bits=2, w_terms=2, truncation="weight_only")),
    ("fpxint W2x1 (A FP)", 2, "FP", fpxint_q(w_bits=2, w_terms=1, truncation="weight_only")),
]
# the matched-storage subset for the ImageNet network (one forward of 1,300 images at 224x224 per peer:
# minutes each on this CPU, so the int8 / int4 storage points and their fpxint counterparts only)
MATCHED = {"rtn W8 (A FP)", "rtn W8A8", "rtn W4 (A FP)", "rtn W4A8", "rtn W4A4", "quanto qint8 weights",
           "quanto qint4 weights", "quanto W8A8, uncalibrated", "fpxint W8x1 (A FP)", "fpxint W4x2 (A FP)",
           "fpxint W8x1 A8x1", "fpxint W4x2 A8x1", "fpxint W4x2 A4x2", "fpxint W4x1 (A FP)"}
# all 1,300 ImageNet images: one forward each is ~8 min on this shared CPU, so the storage points
# in the order that decides the comparison (int8 then int4; fpxint's W8x1 A8x1 and W4x2 A4x2 are
# rows of the bench.queue_sweep table, the same configs on the same images)
LITE_1300 = ["rtn W8A8", "quanto qint4 weights", "fpxint W4x2 (A FP)", "rtn W4 (A FP)", "quanto qint8 weights",
             "fpxint W8x1 (A FP)", "rtn W8 (A FP)", "quanto W8A8, uncalibrated", "fpxint W4x1 (A FP)",
             "rtn W4A8", "rtn W4A4", "fpxint W4x2 A8x1"]
SMOKE = {"rtn W4A8", "quanto qint8 weights", "torchao Int8WeightOnly", "fpxint W4x2 (A FP)", "fpxint W4x2 A4x2"}
QUICK = {"rtn W8A8", "rtn W4 (A FP)", "quanto qint8 weights", "quanto qint4 weights",
         "torchao Int8WeightOnly", "fpxint W4x2 (A FP)", "fpxint W4x2 A8x1", "fpxint W4x1 (A FP)"}


def what_was_quantized(model: nn.Module) -> str:
    """Counts the Conv2d/Linear layers whose weight (or module) is no longer a plain float layer."""
    total, touched, kinds = 0, 0, set()
    for mod in model.modules():
        if type(mod) in (nn.Conv2d, nn.Linear) or type(mod).__name__.startswith(("Q", "Expanded")):
            if isinstance(mod, (nn.Conv2d, nn.Linear)) or type(mod).__name__.startswith("Expanded"):
                total += 1
                w = getattr(mod, "weight", None)
                subclass = w is not None and type(w) not in (nn.Parameter, torch.Tensor)
                if type(mod).__name__.startswith(("Q", "Expanded")) or subclass or getattr(mod, "rtn_fake_quant", False):
                    touched += 1
                    kinds.add(f"{type(mod).__name__}/{type(w).__name__}" if subclass
                              else f"{type(mod).__name__} fake-quant" if getattr(mod, "rtn_fake_quant", False)
                              else type(mod).__name__)
    return f"{touched}/{total}" + (f" ({', '.join(sorted(kinds))})" if kinds else "")


def _top1(model, images, labels, batch=250) -> tuple[float, torch.Tensor]:
    preds = []
    with torch.no_grad():  # not inference_mode: quanto's qint4 weights fail under it
        for i in range(0, len(images), batch):
            preds.append(model(images[i:i + batch]).argmax(1))
    p = torch.cat(preds)
    return 100.0 * (p == labels).float().mean().item(), p


COLUMNS = [("peer", "peer", ""), ("w_bits", "W bits", "d"), ("acts", "activations", ""),
           ("quantized", "layers quantized", ""), ("quant_s", "quantize s", ".3f"), ("top1", "top-1 %", ".2f"),
           ("delta", "vs FP", "+.2f"), ("agree", "agree %", ".1f"), ("fwd_ratio", "fwd x FP", ".2f"),
           ("error", "error", "")]


def model_and_images(name: str, n_images: int):
    """(LoadedModel, ImageData): the model's weights and `n_images` stratified evaluation images, the CIFAR
    ones from the shared folder ($FPXINT_SHARED or ../shared), the built-in model's from its bundled split."""
    from fpxint.data import load_data
    from fpxint.zoo import cache_dir, find_shared, load_model
    from fpxint.zoo.paths import shared_dataset

    shared = find_shared()
    lm = load_model(name, shared_dir=shared)
    source = shared_dataset(lm.spec.dataset, shared) or lm.spec.dataset  # "digits": the bundled split
    return lm, load_data(source, lm.spec, limit=n_images, cache_dir=cache_dir())


def evaluate_model(name: str, n_images: int, peers=PEERS, repeat: int = 2, timing: bool = True,
                   strict: bool = False, on_row=None) -> dict:
    """Every peer on one model: quantize time, top-1 on `n_images` stratified images, forward ratio.

    A peer that fails is reported in its row and the others go on; with `strict` (the smoke run) only a
    missing optional package (ImportError) is reported that way, anything else raises."""
    warnings.filterwarnings("ignore")
    lm, data = model_and_images(name, n_images)
    fp = lm.model.eval()
    images, labels = data.images, data.labels
    bs = 50 if lm.spec.dataset == "imagenet" else 250  # 224x224 inputs: smaller batches bound the memory
    fp_top1, fp_pred = _top1(fp, images, labels, bs)
    print(f"{name}: {data.source}; FP top-1 {fp_top1:.2f} %", flush=True)
    rows = [{"model": name, "peer": "FP (float32)", "w_bits": 32, "acts": "FP", "quantized": "-", "quant_s": 0.0,
             "top1": fp_top1, "delta": 0.0, "agree": 100.0, "fwd_ratio": 1.0}]
    batch = images[:250]
    if on_row:
        on_row(rows)
    for label, w_bits, acts, quantize in peers:
        row = {"model": name, "peer": label, "w_bits": w_bits, "acts": acts}
        try:
            qs = []
            for _ in range(repeat):
                m = copy.deepcopy(fp)
                t0 = time.perf_counter()
                qm = quantize(m)
                qs.append(time.perf_counter() - t0)
            qm.eval()
            row["quant_s"] = min(qs)
            row["quantized"] = what_was_quantized(qm)
            top1, pred = _top1(qm, images, labels, bs)
            row.update(top1=top1, delta=top1 - fp_top1, agree=100.0 * (pred == fp_pred).float().mean().item())
            if timing:
                with torch.no_grad():
                    t = time_interleaved({"fp": lambda: fp(batch), "q": lambda: qm(batch)}, repeat=repeat + 2, warmup=1)
                row["fwd_ratio"] = t["q"].best_s / t["fp"].best_s
        except Exception as exc:  # a peer that cannot run here: say why, keep going
            if strict and not isinstance(exc, ImportError):
                raise
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        rows.append(row)
        if on_row:  # e.g. rewrite the CSV: a stopped run keeps the rows that finished
            on_row(rows)
        print(f"  {label}: " + (row.get("error") or f"top-1 {row['top1']:.2f} ({row['delta']:+.2f}), "
              f"quantized {row['quantized']}, {row['quant_s']:.3f} s"
              + (f", forward x{row['fwd_ratio']:.2f}" if "fwd_ratio" in row else "")), flush=True)
    print(table(rows, COLUMNS), flush=True)
    return {"data": data.source, "fp_top1": fp_top1, "rows": rows}


def run(opts) -> dict:
    n_images = 10000 if opts.full else 500 if opts.quick else 1000
    models = ["resnet20"] if opts.quick else ["resnet20", "resnet32"]
    peers = [p for p in PEERS if not opts.quick or p[0] in QUICK]
    if opts.smoke:  # the built-in model on 32 images, one peer of each kind
        n_images, models, peers = 32, ["digits_cnn"], [p for p in PEERS if p[0] in SMOKE]
    return {"n_images": n_images, "models": {name: evaluate_model(name, n_images, peers, opts.repeat or 2,
                                                                  strict=opts.smoke) for name in models}}


if __name__ == "__main__":  # one model, accuracy and quantize time only: python -m bench.peers resnet32 1000 out.csv
    # [matched]: only the MATCHED peers (python -m bench.peers efficientnet_lite0 1300 out.csv matched);
    # [lite1300]: the LITE_1300 peers in that order. The CSV is rewritten (atomically) after every row.
    import os
    import sys
    from pathlib import Path

    import pandas as pd

    by_name = {p[0]: p for p in PEERS}
    which = sys.argv[4:5]
    chosen = ([p for p in PEERS if p[0] in MATCHED] if which == ["matched"] else
              [by_name[n] for n in LITE_1300] if which == ["lite1300"] else PEERS)

    def write(rows, out=Path(sys.argv[3]) if len(sys.argv) > 3 else None):
        if out is not None:
            tmp = out.with_name(f".{out.name}.tmp")
            pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.4g")
            os.replace(tmp, out)

    evaluate_model(sys.argv[1], int(sys.argv[2]), chosen, timing=False, on_row=write)
