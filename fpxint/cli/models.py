"""`fpxint models`: the model registry as a table or JSON records."""
from __future__ import annotations

import json

from .args import UsageError, dumps


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--family", help="only this family (builtin, cifar10, torchvision)")
    p.add_argument("--json", action="store_true", help="print JSON records")
    p.set_defaults(run=run)


def run(args) -> int:
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
