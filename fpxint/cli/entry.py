"""Command line: `python -m fpxint models | eval | sweep | expand`.

The edge of the project: the only engine-side code that reads the environment (through
`fpxint.zoo.paths.find_shared` / `cache_dir`), prints, and turns user errors into one line on
stderr ("error: ...", exit code 2) instead of a traceback. Everything it measures comes from the
engine (`expand`, `analysis.logits_of`, `cost.cost_summary`, `export`); the FP model is run once
per command and every expanded model is compared with it on the same images.

    python -m fpxint models
    python -m fpxint eval resnet20 --w-bits 4 --a-bits 4 --terms 2 --limit 500
    python -m fpxint sweep resnet20 --pairs 4:4,2:4 --terms 1,2,3 --out runs/r20
    python -m fpxint expand digits_cnn --terms 2 --out runs/digits_w4x2 --check
    python -m fpxint eval --expanded runs/digits_w4x2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from .. import __version__
from . import allocate as cli_allocate, lm as cli_lm
from .args import (EXIT_USAGE, UsageError, _add_config_options, _add_run_options, _check_run_args, _choice_list,
                       _config_given, _int_list, _pairs, _Parser, admit_run, config_from_args, dumps)
from ..config import LEVELS, TRUNCATIONS, ExpansionConfig

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fpxint", description="FP=xINT series expansion: evaluate, sweep and export "
                     "networks written as sums of low-bit integer terms.")
    parser.add_argument("--version", action="version", version=f"fpxint {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--family", help="only this family (builtin, cifar10, torchvision)")
    p.add_argument("--json", action="store_true", help="print JSON records")

    p = sub.add_parser("eval", help="FP and expanded top-1 and fidelity on a dataset")
    p.add_argument("model", nargs="?", help="registry name (default: digits_cnn, or the one in --expanded)")
    p.add_argument("--expanded", metavar="PREFIX", help="evaluate a saved expansion (PREFIX.safetensors + .json)")
    _add_config_options(p)
    _add_run_options(p)
    cli_lm.add_text_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("sweep", help="accuracy and error over bits x terms x level x truncation")
    p.add_argument("model", nargs="?", help="registry name (default: digits_cnn)")
    g = p.add_argument_group("grid")
    g.add_argument("--bits", type=_int_list, default=[2, 3, 4], help="weight bits, e.g. 2,3,4 (default 2,3,4)")
    g.add_argument("--a-bits", type=_int_list, help="activation bits (crossed with --bits; default: same as weights)")
    g.add_argument("--pairs", type=_pairs, help="explicit W:A bit pairs instead of --bits x --a-bits, e.g. 4:4,2:4")
    g.add_argument("--terms", type=_int_list, default=[1, 2, 3], help="terms on both sides (default 1,2,3)")
    g.add_argument("--levels", type=_choice_list(LEVELS), default=None, help="e.g. layer,tensor (default: config's)")
    g.add_argument("--truncations", type=_choice_list(TRUNCATIONS), default=None,
                   help="e.g. full,total_order (default: config's)")
    _add_config_options(p, bits_and_terms=False)
    _add_run_options(p)
    cli_lm.add_text_options(p)
    p.add_argument("--out", metavar="PREFIX", help="write PREFIX.csv and PREFIX.json (updated after each row)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("expand", help="write an expanded model (safetensors + JSON config)")
    p.add_argument("model", nargs="?", help="registry name (default: digits_cnn)")
    p.add_argument("--out", metavar="PREFIX", required=True, help="writes PREFIX.safetensors and PREFIX.json")
    p.add_argument("--force", action="store_true", help="replace PREFIX.safetensors / PREFIX.json if they exist")
    p.add_argument("--check", action="store_true",
                   help="load the files back and assert identical logits on --limit images of the data")
    _add_config_options(p)
    _add_run_options(p, limit_default=256)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    cli_allocate.add_parser(sub)
    return parser


# ----- helpers ------------------------------------------------------------------------------------
def _progress(args, desc: str, total: int):
    from tqdm.auto import tqdm

    enabled = not args.quiet and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not enabled, leave=False,
                dynamic_ncols=True)


def _load_model(args, name: str | None):
    from ..zoo import DEFAULT_MODEL, find_shared, load_model

    shared = find_shared(args.shared)
    if args.shared and shared is None:
        raise UsageError(f"--shared {args.shared}: no such folder")
    lm = load_model(name or DEFAULT_MODEL, args.weights, shared_dir=shared, allow_download=args.download)
    if not lm.trained:
        print(f"warning: {lm.spec.name} has random weights ({lm.note})", file=sys.stderr)
    return lm, shared


def _load_data(args, spec, shared):
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
def _logits(args, net, data, desc: str, device) -> tuple[torch.Tensor, float]:
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


def _cost(model, cfg: ExpansionConfig, spec, macs=None, folded=None) -> dict:
    from ..cost import cost_summary

    if spec.input_size is None:
        return {}
    c = cost_summary(model, cfg, spec.input_size, macs, folded)
    return {k: c[k] for k in ("effective_bits", "weight_mb", "fp_weight_mb", "int_gemms", "bops_vs_fp",
                              "expanded_layers", "layers")}


def _environment(device) -> dict:
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


def _fmt(v, nd=2, unit="") -> str:
    return "n/a" if v is None else f"{v:.{nd}f}{unit}"


def _print_result(r: dict) -> None:
    delta = r["top1"] - r["fp_top1"] if r["top1"] is not None and r["fp_top1"] is not None else None
    c = r.get("cost", {})
    lines = [
        ("model", f"{r['model']} ({r['weights']})"),
        ("data", r["data"]),
        ("config", r["label"]),
        ("FP top-1", _fmt(r["fp_top1"], unit=" %")),
        ("top-1", _fmt(r["top1"], unit=" %") + (f" ({delta:+.2f} vs FP)" if delta is not None else "")),
        ("agreement", _fmt(r["agreement"], unit=" % same top-1 as FP")),
        ("KL(FP||exp)", "n/a" if r["kl"] is None else f"{r['kl']:.3g} nats/image"),
        ("logit SQNR", _fmt(r["logit_sqnr_db"], 1, " dB")),
    ]
    if c:
        lines.append(("cost", f"{c['effective_bits']:.2f} bits/weight, {c['int_gemms']} integer GEMMs, "
                              f"BOPs {100 * c['bops_vs_fp']:.2f} % of FP"))
    lines.append(("time", f"FP {r['fp_seconds']:.1f} s, expanded {r['seconds']:.1f} s on {r['device_name']} "
                          f"(torch {r['torch']}, {r['threads']} threads)"))
    for k, v in lines:
        print(f"{k:<12} {v}")


# ----- commands -----------------------------------------------------------------------------------
def cmd_models(args) -> int:
    from ..zoo import models_table

    t = models_table()
    if args.family:
        if args.family not in set(t.family):
            raise UsageError(f"--family {args.family!r}: choose one of {', '.join(dict.fromkeys(t.family))}")
        t = t[t.family == args.family]
    if args.json:
        print(dumps(json.loads(t.to_json(orient="records")), indent=2))
        return 0
    cols = ["name", "family", "dataset", "input_size", "num_classes", "params", "published_top1", "checkpoint"]
    t = t[cols].rename(columns={"input_size": "input", "num_classes": "classes", "published_top1": "ref_top1"})
    print(t.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.2f}"))
    return 0


def cmd_eval(args) -> int:
    from ..export import load_expanded, read_meta
    from ..model import expand, resolve_device

    _check_run_args(args)
    if cli_lm.wants(args) and not args.expanded:
        return cli_lm.run_eval(args)
    saved_meta = None
    if args.expanded:
        if _config_given(args):
            raise UsageError("config options cannot be combined with --expanded: the saved JSON holds the config")
        st_path, js_path = expanded_paths(args.expanded)
        if not js_path.is_file():
            raise UsageError(f"--expanded {args.expanded}: {js_path} not found (write it with `fpxint expand`)")
        saved_meta = read_meta(js_path)
        if not isinstance(saved_meta.get("config"), dict):
            raise UsageError(f"{js_path} has no 'config' object: not an expansion written by `fpxint expand`")
        if args.model and saved_meta.get("model") and args.model != saved_meta["model"]:
            raise UsageError(f"{js_path} is an expansion of {saved_meta['model']}, not {args.model}")
        cfg = ExpansionConfig.from_dict(saved_meta["config"])
        name = args.model or saved_meta.get("model")
    else:
        cfg, name = config_from_args(args), args.model
    device = resolve_device(args.device)
    lm, shared = _load_model(args, name)
    if saved_meta is not None:
        lm = _expanded_weights(args, lm, saved_meta, js_path)
    data = _load_data(args, lm.spec, shared)
    admit_run(args, lm.spec, cfg, len(data))

    t0 = time.perf_counter()  # expand first: a bad override fails before the FP run
    if saved_meta is not None:
        qmodel = load_expanded(lm.model, st_path, saved_meta, device=device)
    else:
        qmodel = expand(lm.model, cfg, device=device)
    expand_seconds = time.perf_counter() - t0
    fp_logits, fp_seconds = _logits(args, lm.model, data, "FP", device)
    logits, run_seconds = _logits(args, qmodel, data, cfg.label(), device)
    seconds = expand_seconds + run_seconds

    fp = scores(fp_logits, data.labels)
    r = {"model": lm.spec.name, "weights": lm.weights_source, "trained": lm.trained, "config": cfg.to_dict(),
         "label": cfg.label(), "expanded_from": str(st_path) if saved_meta else None,
         "data": data.source, "n_images": len(data), "fp_top1": fp["top1"],
         **scores(logits, data.labels, fp_logits), "seconds": seconds, "fp_seconds": fp_seconds,
         "cost": _cost(lm.model, cfg, lm.spec), **_environment(device)}
    if args.json:
        print(dumps(r, indent=2))
    else:
        _print_result(r)
    return 0


def _sweep_configs(args, base: ExpansionConfig) -> list[ExpansionConfig]:
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


def _check_overrides(model, cfg: ExpansionConfig) -> None:
    from ..model import expandable_layers

    names = [n for n, _ in expandable_layers(model)]
    unknown = [n for n, _ in cfg.overrides if n not in names]
    if unknown:
        raise UsageError(f"--override names layers that {type(model).__name__} does not have: {unknown}; "
                         f"expandable layers: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")


def _write_sweep(prefix: str, doc: dict) -> None:
    import pandas as pd

    out = Path(prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(doc["rows"]).to_csv(f"{out}.csv", index=False, float_format="%.6g")
    Path(f"{out}.json").write_text(dumps(doc, indent=2) + "\n")


def cmd_sweep(args) -> int:
    import pandas as pd
    from tqdm.auto import tqdm

    from ..model import expand, resolve_device

    _check_run_args(args)
    if cli_lm.wants(args):
        return cli_lm.run_sweep(args)
    configs = _sweep_configs(args, config_from_args(args))  # validates every config before any work
    device = resolve_device(args.device)
    lm, shared = _load_model(args, args.model)
    _check_overrides(lm.model, configs[0])
    data = _load_data(args, lm.spec, shared)
    heaviest = max(configs, key=lambda c: (c.mode == "integer", c.w_terms * c.a_terms))
    admit_run(args, lm.spec, heaviest, len(data), passes=len(configs))
    fp_logits, fp_seconds = _logits(args, lm.model, data, "FP", device)
    fp_top1 = scores(fp_logits, data.labels)["top1"]
    argv = getattr(args, "argv", None)
    doc = {"model": lm.spec.name, "weights": lm.weights_source, "trained": lm.trained, "data": data.source,
           "n_images": len(data), "fp_top1": fp_top1, "fp_seconds": fp_seconds,
           "command": "python -m fpxint " + " ".join(argv) if argv is not None else None,
           **_environment(device), "rows": []}
    folded = macs = None
    if lm.spec.input_size is not None:  # every row's cost from one folded copy and one MAC count
        from ..cost import layer_macs
        from ..model import fold_batchnorm

        folded = fold_batchnorm(lm.model)
        macs = layer_macs(lm.model, lm.spec.input_size, folded)
    outer = tqdm(configs, desc="sweep", unit="cfg", file=sys.stderr, dynamic_ncols=True,
                 disable=args.quiet or not sys.stderr.isatty())
    for cfg in outer:
        t0 = time.perf_counter()
        logits, _ = _logits(args, expand(lm.model, cfg, device=device), data, cfg.label(), device)
        s = scores(logits, data.labels, fp_logits)
        c = _cost(lm.model, cfg, lm.spec, macs, folded)
        doc["rows"].append({
            "model": lm.spec.name, "w_bits": cfg.w_bits, "a_bits": cfg.a_bits if cfg.expands_activations else None,
            "terms": cfg.w_terms, "level": cfg.level, "truncation": cfg.truncation, "label": cfg.label(),
            "n_images": len(data), "fp_top1": fp_top1, "top1": s["top1"],
            "delta": s["top1"] - fp_top1 if s["top1"] is not None and fp_top1 is not None else None,
            "agreement": s["agreement"], "kl": s["kl"], "logit_sqnr_db": s["logit_sqnr_db"],
            "effective_bits": c.get("effective_bits"), "int_gemms": c.get("int_gemms"),
            "bops_vs_fp": c.get("bops_vs_fp"), "seconds": time.perf_counter() - t0, "config": cfg.to_json()})
        if args.out:
            _write_sweep(args.out, doc)
    if args.json:
        print(dumps(doc, indent=2))
        return 0
    t = pd.DataFrame(doc["rows"])
    print(f"{doc['model']} on {doc['data']}: FP top-1 {_fmt(fp_top1, unit=' %')} ({fp_seconds:.1f} s)")
    cols = ["label", "top1", "delta", "agreement", "kl", "logit_sqnr_db", "effective_bits", "bops_vs_fp", "seconds"]
    print(t[cols].to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    if args.out:
        print(f"wrote {args.out}.csv and {args.out}.json")
    return 0


def _expanded_weights(args, lm, meta: dict, js_path: Path):
    """The FP model an expansion was made from, so that "vs FP" compares with those weights: the
    loaded one when its sha256 matches the JSON's record, else the recorded weights file, else an error."""
    from ..model import state_sha256
    from ..zoo import load_model

    want, source = meta["fp_weights"].get("sha256"), meta["fp_weights"].get("source")
    if not want or state_sha256(lm.model) == want:
        return lm
    if not args.weights and source and Path(source).is_file():  # expanded from a --weights file: reload it
        other = load_model(lm.spec.name, source)
        if state_sha256(other.model) == want:
            return other
    raise UsageError(f"{js_path} was expanded from other FP weights ({source or 'source not recorded'}, "
                     f"sha256 {want[:12]}) than {lm.weights_source}; pass --weights FILE with the weights "
                     "that were expanded")


def cmd_expand(args) -> int:
    from ..export import load_expanded, save_expanded
    from ..model import expand, resolve_device

    _check_run_args(args)
    cfg = config_from_args(args)
    device = resolve_device(args.device)
    st_path, js_path = expanded_paths(args.out)
    there = [str(p) for p in (st_path, js_path) if os.path.lexists(p)]
    if there and not args.force:  # before the work; save_expanded checks again when it writes
        raise UsageError(f"{' and '.join(there)} already exist(s); pass --force to replace, or choose another --out")
    lm, shared = _load_model(args, args.model)
    admit_run(args, lm.spec, cfg, args.limit if args.check else 1)
    qmodel = expand(lm.model, cfg, device="cpu")
    blob, text = save_expanded(qmodel, lm.spec.name, path=str(st_path)[: -len(".safetensors")],
                               weights_source=lm.weights_source, overwrite=args.force)
    r = {"model": lm.spec.name, "weights": lm.weights_source, "config": cfg.to_dict(), "label": cfg.label(),
         "safetensors": str(st_path), "json": str(js_path), "bytes": len(blob),
         "expanded_layers": len(qmodel.fpxint_layers), "cost": _cost(lm.model, cfg, lm.spec), "check": None}
    if args.check:
        data = _load_data(args, lm.spec, shared)
        q1, _ = _logits(args, qmodel.to(device), data, "in memory", device)
        loaded = load_expanded(lm.model, st_path, js_path, device=device)
        q2, _ = _logits(args, loaded, data, "loaded", device)
        same = torch.equal(q1, q2)
        r["check"] = {"identical_logits": same, "n_images": len(data), "data": data.source,
                      "max_abs_diff": (q1 - q2).abs().max().item(), **scores(q2, data.labels)}
    if args.json:
        print(dumps(r, indent=2))
    else:
        print(f"wrote {st_path} ({len(blob) / 1024:.1f} KiB) and {js_path}: {lm.spec.name} {cfg.label()}, "
              f"{r['expanded_layers']} layers expanded")
        if r["check"]:
            ck = r["check"]
            verdict = "identical logits" if ck["identical_logits"] else f"MISMATCH (max |diff| {ck['max_abs_diff']:.3g})"
            print(f"check: reloaded from disk, {verdict} on {ck['n_images']} images, top-1 {_fmt(ck['top1'], unit=' %')}")
    if args.check and not r["check"]["identical_logits"]:
        print("error: the reloaded expansion does not reproduce the in-memory model's logits", file=sys.stderr)
        return 1
    return 0


COMMANDS = {"models": cmd_models, "eval": cmd_eval, "sweep": cmd_sweep, "expand": cmd_expand,
            "allocate": cli_allocate.run}


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    else:
        text = str(e).strip() or type(e).__name__
    return " ".join(text.split())[:500]


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code (0 ok, 1 a failed --check, 2 any error, 130 interrupted).

    Every error is one line on stderr and exit code 2: bad input (UsageError, ModelLoadError,
    DataError, ...), out of memory, input nested too deeply, and anything unexpected (FPXINT_DEBUG=1
    shows the traceback of those).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return COMMANDS[args.command](args)
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (torch.OutOfMemoryError, MemoryError):
        print("error: out of memory; try a smaller --batch-size or --limit, fewer terms, or simulate mode",
              file=sys.stderr)
        return EXIT_USAGE
    except RecursionError:
        print("error: the input is nested too deeply to be read", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as e:  # UsageError, ModelLoadError and DataError are ValueErrors
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - a traceback is for developers: FPXINT_DEBUG=1
        if os.environ.get("FPXINT_DEBUG") == "1":
            raise
        print(f"error: {type(e).__name__}: {_one_line(e)} (FPXINT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_USAGE
