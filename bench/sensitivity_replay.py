"""Cost of the measured-on-logits sensitivity on SmolLM2-135M: the whole model every pass (`replay=False`,
what ran before) against the block replay (blocks before the expanded layer's block replay their FP-pass
outputs), interleaved in one run, on the calibration window the `allocate` command uses (64 tokens after
2 x 256 evaluation windows). The two tables must be equal number for number (checked here as well).

A sample of layers keeps it to minutes: one layer per sampled block, spread evenly over the 30 blocks and
cycling through the kinds (every other layer stays FP for this run); both sides, `terms` term counts. The
replay saves on average the blocks before a layer's block, so an even spread over the blocks stands for
the 210 block layers; the LM head (1 of 211 layers, no block before it to skip: the same cost in both) is
left out, with `--head` in.

    python -m bench.sensitivity_replay [blocks=10] [terms=1] [--head] [--threads N] [--json FILE]

On a loaded machine take --threads 1: with 2 threads on 2 busy cores every small op waits for a
descheduled thread (an FP pass of SmolLM2 on 64 tokens took 25-32 s with 2 threads, 3.0-3.2 s with 1,
at load average 15, interleaved in one process).
"""
from __future__ import annotations

import json
import os
import sys
import time

import pandas as pd
import torch

from bench.common import format_machine, machine_info, time_interleaved
from fpxint.allocation.sensitivity import layer_sensitivity
from fpxint.config import ExpansionConfig, LayerOverride
from fpxint.model import expandable_layers
from fpxint.text import WIKITEXT, token_windows
from fpxint.zoo import cache_dir, find_shared
from fpxint.zoo.hf import load_lm

KINDS = ("self_attn.q_proj", "mlp.down_proj", "self_attn.o_proj", "mlp.gate_proj", "self_attn.v_proj", "mlp.up_proj",
         "self_attn.k_proj")


def main(argv: list[str]) -> int:
    opts = {}
    for flag in ("--json", "--threads"):
        if flag in argv:
            i = argv.index(flag)
            opts[flag], argv = argv[i + 1], argv[:i] + argv[i + 2:]
    out, head = opts.get("--json"), "--head" in argv
    argv = [a for a in argv if a != "--head"]
    if "--threads" in opts:
        torch.set_num_threads(int(opts["--threads"]))
    n_blocks, n_terms = (int(argv[0]) if argv else 10), (int(argv[1]) if len(argv) > 1 else 1)
    info = machine_info()
    print(format_machine(info))
    lm = load_lm("smollm2_135m", cache_dir=cache_dir())
    path = find_shared(None) / WIKITEXT
    ev = token_windows(lm.tokenizer, path, 256, 2)
    probe = token_windows(lm.tokenizer, path, 64, 1, start=ev.end).ids
    names = [n for n, _ in expandable_layers(lm.model)]
    blocks = [round(i * 29 / (n_blocks - 1)) for i in range(n_blocks)]
    keep = [f"lm.model.layers.{b}.{KINDS[i % len(KINDS)]}" for i, b in enumerate(blocks)] + ["lm.lm_head"] * head
    cfg = ExpansionConfig(w_bits=4, a_bits=4, w_terms=2, a_terms=2, a_granularity="per_token", fold_bn=False,
                          overrides=tuple((n, LayerOverride(fp=True)) for n in names if n not in keep))
    tables: dict[str, pd.DataFrame] = {}

    def run(replay: bool):
        def f():
            tables[replay] = layer_sensitivity(lm.model, cfg, probe, terms=range(1, n_terms + 1),
                                               sides=("weight", "activation"), replay=replay)
        return f

    t0 = time.perf_counter()
    t = time_interleaved({"whole model": run(False), "block replay": run(True)}, repeat=1)
    equal = tables[False].noise.tolist() == tables[True].noise.tolist()
    ratio = t["block replay"].best_s / t["whole model"].best_s
    passes = len(tables[True])
    print(f"layers {keep}\n{passes} passes each; whole model {t['whole model'].best_s:.1f} s, block replay "
          f"{t['block replay'].best_s:.1f} s: new / old = {ratio:.3f}; tables equal: {equal}; "
          f"load average after {[round(v, 2) for v in os.getloadavg()]}")
    doc = {"machine": info, "layers": keep, "terms": n_terms, "passes_each": passes, "probe_tokens": probe.numel(),
           "whole_model_s": t["whole model"].best_s, "block_replay_s": t["block replay"].best_s,
           "new_over_old": ratio, "tables_equal": equal, "seconds": time.perf_counter() - t0,
           "load_average_after": [round(v, 2) for v in os.getloadavg()]}
    if out:
        tmp = f"{out}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, out)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
