"""`fpxint models`: the model registry as a table or JSON records."""
from __future__ import annotations

import json

from .args import UsageError, dumps


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the model registry (image classifiers and language models)")
    p.add_argument("--family", help="only this family (builtin, cifar10, torchvision, language)")
    p.add_argument("--json", action="store_true", help="print JSON records")
    p.set_defaults(run=run)


def run(args) -> int:
    import pandas as pd

    from ..zoo import models_table
    from ..zoo.hf import lm_table

    t = pd.concat([models_table().assign(task="classification"), lm_table()], ignore_index=True)
    if args.family:
        if args.family not in set(t.family):
            raise UsageError(f"--family {args.family!r}: choose one of {', '.join(dict.fromkeys(t.family))}")
        t = t[t.family == args.family]
    if args.json:
        print(dumps(json.loads(t.to_json(orient="records")), indent=2))
        return 0
    lms = t[t.family == "language"]
    cols = ["name", "family", "task", "dataset", "input_size", "num_classes", "params", "published_top1", "checkpoint"]
    t = t[cols].rename(columns={"input_size": "input", "num_classes": "classes", "published_top1": "ref_top1"})
    t["params"] = t["params"].map(lambda v: "-" if pd.isna(v) else f"{int(v)}")
    t["classes"] = t["classes"].map(lambda v: "-" if pd.isna(v) else f"{int(v)}")
    print(t.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.2f}"))
    for r in lms.itertuples():  # their reference is a metric other than top-1, and SmolLM2 has a caveat
        if r.reference:
            print(f"{r.name} ({r.metric}): {r.reference}" + (f". Note: {r.caveat}" if r.caveat else ""))
    return 0
