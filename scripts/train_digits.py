"""Trains the built-in default model (DigitsCNN on scikit-learn's 8x8 digits) deterministically on CPU.

Writes ``fpxint/weights/digits_cnn.safetensors`` and ``digits_cnn.json`` (split, accuracy, seed,
date). Takes a few seconds; the held-out split is the one :func:`fpxint.data.load_data` serves.

    python scripts/train_digits.py [--epochs 60] [--seed 0] [--out fpxint/weights]
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fpxint.data import load_data  # noqa: E402
from fpxint.zoo.digits import DIGITS_SPLIT, SPLIT_FILE, DigitsCNN, sklearn_test_indices  # noqa: E402
from fpxint.zoo.registry import WEIGHTS_DIR, get_spec  # noqa: E402


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random +-1 pixel translations (zero fill): the only augmentation 8x8 digits tolerate well."""
    dy, dx = torch.randint(-1, 2, (2,), generator=gen).tolist()
    x = torch.roll(x, (dy, dx), dims=(2, 3))
    background = x.amin()  # normalized value of a blank (zero) pixel
    if dy:
        x[:, :, 0 if dy > 0 else -1, :] = background
    if dx:
        x[:, :, :, 0 if dx > 0 else -1] = background
    return x


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def train(epochs: int, seed: int, batch_size: int = 64, lr: float = 3e-3) -> tuple[DigitsCNN, dict]:
    """Trains DigitsCNN with Adam + cosine decay; returns the model and its metadata."""
    torch.manual_seed(seed)
    # One thread: the tensors are tiny (threads only add overhead) and the result then does not
    # depend on the machine's core count.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    spec = get_spec("digits_cnn")
    train_data = load_data("digits", spec, split="train")
    test_data = load_data("digits", spec, split="test")
    x, y = train_data.images, train_data.labels
    model = DigitsCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            if len(idx) < batch_size:  # a 3-image tail batch only adds BatchNorm noise
                continue
            loss = F.cross_entropy(model(_shift(x[idx].clone(), gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 10 == 0:
            test_top1 = accuracy(model, test_data.images, test_data.labels)
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  test {test_top1:.2f} %")
    meta = {
        "model": "digits_cnn",
        "split": DIGITS_SPLIT,
        "n_train": len(x),
        "n_test": len(test_data),
        "test_top1": round(accuracy(model, test_data.images, test_data.labels), 2),
        "train_top1": round(accuracy(model, x, y), 2),
        "params": sum(p.numel() for p in model.parameters()),
        "normalization": {"scale": "pixel / 16", "mean": list(spec.mean), "std": list(spec.std)},
        "seed": seed,
        "epochs": epochs,
        "optimizer": f"AdamW lr={lr} wd=1e-4, one-cycle, batch {batch_size}, +-1 px shifts",
        "train_seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    return model, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    # the held-out split's indices, bundled so the app reads the test images without scikit-learn
    SPLIT_FILE.write_text(json.dumps({"split": DIGITS_SPLIT, "test_indices": sklearn_test_indices()}) + "\n")
    model, meta = train(args.epochs, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {"split": DIGITS_SPLIT, "seed": str(args.seed)}
    save_file(state, str(args.out / "digits_cnn.safetensors"), metadata=metadata)
    (args.out / "digits_cnn.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
