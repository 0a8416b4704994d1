"""The command line, `fpxint COMMAND ...` / `python -m fpxint COMMAND ...` (`--help` on each):

    models     the model registry
    eval       one config against FP on a dataset (or a saved expansion: --expanded PREFIX)
    sweep      a grid of configs: bits x terms x level x truncation
    expand     write an expanded model (safetensors + JSON), --check reads it back
    allocate   per-layer term counts under a budget (beyond the paper)

    python -m fpxint models --family cifar10
    python -m fpxint eval resnet20 --w-bits 4 --a-bits 4 --terms 2 --limit 500
    python -m fpxint sweep resnet20 --pairs 4:4,2:4 --terms 1,2,3 --out runs/r20
    python -m fpxint expand digits_cnn --terms 2 --out runs/digits_w4x2 --check
    python -m fpxint eval --expanded runs/digits_w4x2
    python -m fpxint allocate digits_cnn --bits 2 --terms 4 --budget-gemms 0.75x --eval all

eval and sweep also take language models (smollm2_135m, minilm_l6, hf:NAME; see `lm`).

Modules, each importing only those above it in this list: `args` (the options shared by the commands,
`config_from_args`, `UsageError`, strict JSON), `common` (model, data, logits, scores, cost and sweep
helpers shared by the commands), `lm` (eval / sweep on language models), one module per command family
(`models`, `evaluate`: eval and sweep, `expand`, `allocate`; they never import each other), `entry` (the
parser, dispatch and one-line errors: `main`).
"""
from .entry import main

__all__ = ["main"]
