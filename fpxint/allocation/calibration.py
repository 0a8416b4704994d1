"""Which images choose an allocation and which judge it: `calibration_split`.

An allocation fitted and scored on the same images would report its own fit, not its accuracy, so the
CLI (`fpxint allocate`) and the app's Allocate page take both sets from here: calibration images
stratified by class, evaluation images disjoint from them (the rest of the same pool, or a separate
pool such as a test split).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import stratified_indices


@dataclass(frozen=True)
class CalibrationSplit:
    """Disjoint calibration and evaluation images (labels None when the images have none).

    `calib_index` indexes the pool the calibration images came from; `eval_index` the evaluation
    pool (the same pool, or `eval_pool` when one was given). Both are sorted int64.
    """
    calib_images: torch.Tensor
    calib_labels: torch.Tensor | None
    eval_images: torch.Tensor
    eval_labels: torch.Tensor | None
    calib_index: torch.Tensor
    eval_index: torch.Tensor

    @property
    def n_calib(self) -> int:
        return len(self.calib_images)

    @property
    def n_eval(self) -> int:
        return len(self.eval_images)


def _take(images: torch.Tensor, labels: torch.Tensor | None, index: torch.Tensor):
    return images[index], None if labels is None else labels[index]


def calibration_split(images: torch.Tensor, labels: torch.Tensor | None, n_calib: int, seed: int = 0,
                      n_eval: int | None = None,
                      eval_pool: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> CalibrationSplit:
    """Chooses `n_calib` calibration images and evaluation images that never overlap them.

    Args:
        images: [N, ...] the pool the calibration images are drawn from.
        labels: [N] int labels, or None (then a seeded permutation replaces the strata).
        n_calib: calibration images, >= 1, stratified by class (`data.stratified_indices`, seed `seed`).
        seed: the calibration choice's seed; a smaller evaluation subset is drawn with seed + 1.
        n_eval: evaluation images, stratified; None: all of the evaluation pool; 0: none.
        eval_pool: (images, labels) of a separate evaluation set (e.g. the test split when `images` is
            the train split); None: the evaluation pool is what calibration leaves of `images`.

    Returns:
        A `CalibrationSplit`.

    Raises:
        ValueError: n_calib < 1, n_eval < 0, or (without `eval_pool`) n_calib >= N, which would leave
            no image to evaluate on.

    Example:
        >>> s = calibration_split(data.images, data.labels, 256)  # calibrate on 256, evaluate on the rest
        >>> a = allocate(model, cfg, "gemms=0.75x", s.calib_images, s.calib_labels)
    """
    if n_calib < 1:
        raise ValueError(f"n_calib={n_calib}: give a number of calibration images >= 1")
    if n_eval is not None and n_eval < 0:
        raise ValueError(f"n_eval={n_eval}: give a number of evaluation images >= 0, or None for all")
    n = len(images)
    ci = stratified_indices(labels, n_calib, seed, n=n)
    if eval_pool is None:
        if n_calib >= n:
            raise ValueError(f"{n_calib} calibration images leave none of the {n} images for evaluation")
        rest = torch.ones(n, dtype=torch.bool)
        rest[ci] = False
        pool_index = rest.nonzero().squeeze(1)  # evaluation indexes the same pool as calibration
        ev_images, ev_labels = _take(images, labels, pool_index)
    else:
        ev_images, ev_labels = eval_pool
        pool_index = torch.arange(len(ev_images))
    ei = torch.arange(len(ev_images))
    if n_eval is not None and n_eval < len(ev_images):
        ei = stratified_indices(ev_labels, n_eval, seed + 1, n=len(ev_images)) if n_eval > 0 else ei[:0]
    return CalibrationSplit(*_take(images, labels, ci), *_take(ev_images, ev_labels, ei),
                            calib_index=ci, eval_index=pool_index[ei])
