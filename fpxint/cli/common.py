"""What several commands share, below them: the model and data the options name, one timed FP or expanded
pass, its scores against FP, the cost columns, the run's environment, and the sweep's grid and files.

The functions with an `args` parameter read a command's parsed options (`fpxint.cli.args`); user errors
are `UsageError`.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch

from .. import __version__
from ..atomic import existing, refusal, write_files
from ..config import ExpansionConfig
from .args import UsageError, dumps


def _progress(args, desc: str, total: int):
    from tqdm.auto import tqdm

    enabled = not args.quiet and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not enabled, leave=False,
                dynamic_ncols=True)


def model_from_args(args, name: str | None):
    """(LoadedModel, shared folder or None) for a registry name (default: the registry's default model)."""
    from ..zoo import DEFAULT_MODEL, find_shared, load_model

    shared = find_shared(args.shared)
    if args.shared and shared is None:
        raise UsageError(f"--shared {args.shared}: no such folder")
    lm = load_model(name or DEFAULT_MODEL, args.weights, shared_dir=shared, allow_download=args.download)
    if not lm.trained:
        print(f"warning: {lm.spec.name} has random weights ({lm.note})", file=sys.stderr)
    return lm, shared


def data_from_args(args, spec, shared):
    """The images of --data, else the model's own test set (digits bundled, CIFAR-10 / ImageNet from shared)."""
    from ..data import load_data
    from ..zoo import cache_dir
    from ..zoo.paths import shared_dataset

    source = args.data
    if source is None:
        if spec.dataset == "digits":
            source = "digits"
        elif spec.dataset == "imagenet" and spec.family != "torchvision" and shared_dataset("imagenet", shared):
            source = shared_dataset("imagenet", shared)  # the 1,300 labelled validation images
        elif spec.dataset == "cifar10":
            folder = shared / "data" / "cifar10-test" if shared else None
            if folder is None or not folder.is_dir():
                raise UsageError(f"no CIFAR-10 test images for {spec.name}: pass --data PATH (an ImageFolder of "
                                 "the CIFAR-10 test set) or --shared DIR / FPXINT_SHARED (a folder with "
                                 "data/cifar10-test)")
            source = folder
        else:
            raise UsageError(f"{spec.name} needs evaluation images: pass --data PATH (an ImageFolder or zip of "
                             f"{spec.dataset or 'labeled'} images, one folder per class)")
    return load_data(source, spec, limit=args.limit, seed=args.seed,
                     cache_dir=None if args.no_cache else cache_dir(), allow_download=args.download)


@torch.no_grad()
def run_logits(args, net, data, desc: str, device) -> tuple[torch.Tensor, float]:
    """(logits of `net` on every image of `data`, seconds), with a progress bar on a terminal."""
    from ..analysis import logits_of

    t0 = time.perf_counter()
    with _progress(args, desc, len(data)) as bar:
        def cb(frac, _text):
            bar.update(round(frac * len(data)) - bar.n)
        logits, _ = logits_of(net, (data.images, data.labels), args.batch_size, device, cb)
    return logits, time.perf_counter() - t0


def scores(logits: torch.Tensor, labels: torch.Tensor | None, fp_logits: torch.Tensor | None = None) -> dict:
    """top1 (%), and against FP: agreement (% same top-1), kl (KL(FP || expanded), nats/image),
    logit_sqnr_db (+inf when the logits are identical; JSON null, see `fpxint.metrics`)."""
    from .. import metrics

    out = {"top1": metrics.top1(logits, labels)}
    if fp_logits is not None:
        out["agreement"] = 100 * metrics.agreement(fp_logits, logits)
        out["kl"] = metrics.kl(fp_logits, logits)
        out["logit_sqnr_db"] = metrics.sqnr_db(fp_logits, logits)
    return out


def cost_of(model, cfg: ExpansionConfig, spec, macs=None, folded=None) -> dict:
    """The cost columns the commands report ({} when the model has no fixed input size)."""
    from ..cost import cost_summary

    if spec.input_size is None:
        return {}
    c = cost_summary(model, cfg, spec.input_size, macs, folded)
    return {k: c[k] for k in ("effective_bits", "weight_mb", "fp_weight_mb", "int_gemms", "bops_vs_fp",
                              "expanded_layers", "layers")}


def environment(device) -> dict:
    """Where a result was measured: device, torch, fpxint, threads, CPUs, Python."""
    from ..model import device_name

    return {"device": device.type, "device_name": device_name(device), "torch": torch.__version__,
            "fpxint": __version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "python": platform.python_version()}


def expanded_paths(prefix: str | os.PathLike) -> tuple[Path, Path]:
    """PREFIX(.safetensors|.json) -> (PREFIX.safetensors, PREFIX.json); dots inside PREFIX are kept."""
    p = str(prefix)
    for suffix in (".safetensors", ".json"):
        if p.endswith(suffix):
            p = p[: -len(suffix)]
    return Path(p + ".safetensors"), Path(p + ".json")


def fmt(v, nd=2, unit="") -> str:
    """v with nd decimals and a unit, or 'n/a' for None."""
    return "n/a" if v is None else f"{v:.{nd}f}{unit}"


def sweep_configs(args, base: ExpansionConfig) -> list[ExpansionConfig]:
    """The sweep grid (levels x truncations x bit pairs x terms) around `base`, each model once."""
    if args.pairs and args.a_bits:
        raise UsageError("give either --pairs or --bits/--a-bits, not both")
    pairs = args.pairs or [(b, a) for b in args.bits for a in (args.a_bits or [b])]
    if not pairs or not args.terms:
        raise UsageError("the sweep grid is empty: give --bits/--pairs and --terms")
    configs, seen = [], set()
    for level in args.levels or [base.level]:
        for trunc in args.truncations or [base.truncation]:
            for w, a in pairs:
                for k in args.terms:
                    cfg = base.replace(w_bits=w, a_bits=a, level=level, truncation=trunc).with_terms(k)
                    key = cfg.to_json() if cfg.expands_activations else (w, k, level, "AFP")  # a_bits unused
                    if trunc == "total_order" and not cfg.overrides and cfg.total_order >= 2 * k:
                        key = cfg.replace(truncation="full").to_json()  # keeps every (i, j): the full-grid model
                    if key not in seen:
                        seen.add(key)
                        configs.append(cfg)
    return configs


def claim_outputs(args, paths, flag: str = "--out") -> None:
    """Before any work: the files a command will write must not exist, unless --force (one-line UsageError)."""
    there = existing(paths)
    if there and not args.force:
        raise UsageError(f"{refusal(there)}; pass --force to replace, or choose another {flag}")


def write_outputs(args, files, again: bool = False, flag: str = "--out") -> None:
    """Writes (path, text) pairs atomically (`fpxint.atomic`): all or none, never half a file, no temporary
    left; a file that exists is replaced only with --force, or `again` (this run wrote it already)."""
    try:
        write_files(files, overwrite=args.force or again)
    except FileExistsError as e:  # appeared since claim_outputs, or never claimed
        raise UsageError(f"{e}; pass --force to replace, or choose another {flag}") from None


def sweep_paths(prefix: str) -> list[str]:
    return [f"{prefix}.csv", f"{prefix}.json"]


def write_sweep(args, doc: dict, again: bool = False) -> None:
    """--out PREFIX: PREFIX.csv (the rows) and PREFIX.json (the whole document)."""
    import pandas as pd

    csv = pd.DataFrame(doc["rows"]).to_csv(index=False, float_format="%.6g")
    write_outputs(args, zip(sweep_paths(args.out), (csv, dumps(doc, indent=2) + "\n")), again)


def allocation_paths(args) -> list[str]:
    """What `allocate --out PATH --save PREFIX` writes (the curve only with --eval; claimed all the same)."""
    saved = [f"{args.save}.{ext}" for ext in ("layers.csv", "curve.csv", "json")] if args.save else []
    return ([args.out] if args.out else []) + saved


def write_allocation(args, config_json: str, layers, curve, summary: dict) -> None:
    """--out: the allocated ExpansionConfig; --save: PREFIX.layers.csv, PREFIX.curve.csv (when evaluated),
    PREFIX.json (the summary). One atomic write for all of them."""
    files = [(args.out, config_json + "\n")] if args.out else []
    if args.save:
        files.append((f"{args.save}.layers.csv", layers.to_csv(index=False)))
        if curve is not None:
            files.append((f"{args.save}.curve.csv", curve.to_csv(index=False)))
        files.append((f"{args.save}.json", dumps(summary, indent=2, default=str) + "\n"))
    if files:
        write_outputs(args, files, flag="--out / --save")
