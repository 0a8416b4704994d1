"""Which images choose an allocation and which judge it: the two sets never overlap, so the accuracy
reported for an allocation is measured on images its choice never saw."""
from __future__ import annotations

import torch

from ..data import stratified_indices


def calibration_split(labels: torch.Tensor | None, n: int, n_calib: int, seed: int = 0,
                      n_eval: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits ``n`` images into calibration and evaluation indices.

    Args:
        labels: Int labels ``(n,)`` (stratifies both choices by class), or None for unlabeled images.
        n: Number of images.
        n_calib: Calibration images: a stratified choice (``fpxint.data.stratified_indices``, ``seed``).
        seed: Seed of the calibration choice; the evaluation subset (if any) uses ``seed + 1``.
        n_eval: Evaluation images: a stratified choice among the others; None keeps all of them.

    Returns:
        (calibration indices, evaluation indices), sorted int64, disjoint.

    Raises:
        ValueError: when the calibration images leave no image for evaluation.

    Example:
        >>> cal, ev = calibration_split(torch.arange(10).repeat(50), 500, 100)  # 10 per class, then the 400 others
    """
    if not 1 <= n_calib < n:
        raise ValueError(f"{n_calib} calibration images leave none of the {n} images for evaluation; "
                         "use fewer calibration images or more images")
    cal = stratified_indices(labels, n_calib, seed, n=n)
    rest = torch.ones(n, dtype=torch.bool)
    rest[cal] = False
    ev = rest.nonzero().flatten()
    if n_eval is not None and n_eval < len(ev):
        pick = stratified_indices(None if labels is None else labels[ev], n_eval, seed + 1, n=len(ev)) \
            if n_eval > 0 else torch.arange(0)
        ev = ev[pick]
    return cal, ev
