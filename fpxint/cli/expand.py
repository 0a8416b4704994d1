"""`fpxint expand`: an expanded model written as safetensors + JSON (`fpxint.export`), optionally read
back and checked for identical logits."""
from __future__ import annotations

import sys

import torch

from .args import (add_config_options, add_force_option, add_run_options, admit_run, check_run_args, config_from_args,
                   dumps)
from .common import claim_outputs, cost_of, data_from_args, expanded_paths, fmt, model_from_args, run_logits, scores


def add_parser(sub) -> None:
    p = sub.add_parser("expand", help="write an expanded model (safetensors + JSON config)")
    p.add_argument("model", nargs="?", help="registry name (default: digits_cnn)")
    p.add_argument("--out", metavar="PREFIX", required=True, help="writes PREFIX.safetensors and PREFIX.json")
    add_force_option(p, "PREFIX.safetensors / PREFIX.json")
    p.add_argument("--check", action="store_true",
                   help="load the files back and assert identical logits on --limit images of the data")
    add_config_options(p)
    add_run_options(p, limit_default=256)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..export import load_expanded, save_expanded
    from ..model import expand, resolve_device

    check_run_args(args)
    cfg = config_from_args(args)
    device = resolve_device(args.device)
    st_path, js_path = expanded_paths(args.out)
    claim_outputs(args, (st_path, js_path))  # before the work; save_expanded checks again when it writes
    lm, shared = model_from_args(args, args.model)
    admit_run(args, lm.spec, cfg, args.limit if args.check else 1)
    qmodel = expand(lm.model, cfg, device="cpu")
    blob, text = save_expanded(qmodel, lm.spec.name, path=str(st_path)[: -len(".safetensors")],
                               weights_source=lm.weights_source, overwrite=args.force)
    r = {"model": lm.spec.name, "weights": lm.weights_source, "config": cfg.to_dict(), "label": cfg.label(),
         "safetensors": str(st_path), "json": str(js_path), "bytes": len(blob),
         "expanded_layers": len(qmodel.fpxint_layers), "cost": cost_of(lm.model, cfg, lm.spec), "check": None}
    if args.check:
        data = data_from_args(args, lm.spec, shared)
        q1, _ = run_logits(args, qmodel.to(device), data, "in memory", device)
        loaded = load_expanded(lm.model, st_path, js_path, device=device)
        q2, _ = run_logits(args, loaded, data, "loaded", device)
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
            print(f"check: reloaded from disk, {verdict} on {ck['n_images']} images, top-1 {fmt(ck['top1'], unit=' %')}")
    if args.check and not r["check"]["identical_logits"]:
        print("error: the reloaded expansion does not reproduce the in-memory model's logits", file=sys.stderr)
        return 1
    return 0
