"""Evaluation images for the zoo's models: bundled digits, CIFAR-10, image folders and zips.

Every source becomes an :class:`ImageData` already preprocessed and normalized for one
:class:`~fpxint.zoo.ModelSpec`. Quick-run subsets are stratified (``ImageFolder`` order is by
class, so the first N images would be the first classes only). Decoded images are cached as
uint8 tensors (`fpxint.imagecache`) so a second run skips JPEG decoding.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from fpxint import imagecache
from fpxint.imagefiles import (IMAGE_EXTENSIONS, MAX_FILE_BYTES, MAX_PIXELS, DataError, is_image, open_source,
                               read_decode)
from fpxint.labelfiles import LabelFileError, find_label_file, parse_label_file, wnid_indices
from fpxint.zoo.registry import ModelSpec

__all__ = ["ImageData", "DataError", "load_data", "stratified_indices", "batches", "random_images", "MAX_PIXELS",
           "MAX_FILE_BYTES"]


@dataclass
class ImageData:
    """Preprocessed images ready for a model.

    Attributes:
        images: Float ``(N, C, H, W)``, normalized with the spec's mean and std.
        labels: Int64 ``(N,)`` indices into the model's logits, or None for unlabeled images.
        classes: Class names in logit order, or None for unlabeled images.
        source: One-line description (where from, how many, how chosen, what was skipped).
        n_classes_present: Distinct labels among ``labels`` (0 when unlabeled).
        skipped: ``"file: reason"`` for each image that failed to decode.
        from_cache: Whether the decoded images came from the on-disk cache.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str] | None
    source: str
    n_classes_present: int
    skipped: list[str] = field(default_factory=list)
    from_cache: bool = False

    def __len__(self) -> int:
        return self.images.shape[0]


def stratified_indices(
    labels: torch.Tensor | None, limit: int | None, seed: int = 0, *, n: int | None = None
) -> torch.Tensor:
    """Chooses ``limit`` indices with (as nearly as possible) equal counts per class.

    The ``limit % classes`` extra images go to classes chosen by the seed; a class with too few
    images gives its share to the others. Unlabeled data (``labels=None``, length ``n``) gets the
    first ``limit`` of a seeded permutation.

    Args:
        labels: Int labels ``(N,)`` or None.
        limit: How many to keep; None or >= N keeps all.
        seed: Seed of the choice; the same seed always gives the same indices.
        n: Number of items when ``labels`` is None.

    Returns:
        Sorted int64 indices.

    Example:
        >>> stratified_indices(torch.arange(10).repeat_interleave(1000), 500).bincount()  # 50 per class
    """
    total = n if labels is None else len(labels)
    if total is None:
        raise ValueError("stratified_indices needs labels or n")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if limit is None or limit >= total:
        return torch.arange(total)
    gen = torch.Generator().manual_seed(seed)
    if labels is None:
        return torch.randperm(total, generator=gen)[:limit].sort().values
    classes = labels.unique()
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    pools = [m[torch.randperm(len(m), generator=gen)] for m in members]
    order = torch.randperm(len(classes), generator=gen).tolist()  # who gets the remainder, and spare slots
    quota = {c: limit // len(classes) + (rank < limit % len(classes)) for rank, c in enumerate(order)}
    taken = {c: min(quota[c], len(pools[c])) for c in order}
    short = limit - sum(taken.values())
    while short > 0:  # hand the shortfall of small classes to the others, round robin
        for c in order:
            if short and taken[c] < len(pools[c]):
                taken[c] += 1
                short -= 1
    return torch.cat([pools[c][: taken[c]] for c in order]).sort().values


def batches(data: ImageData | tuple[torch.Tensor, torch.Tensor | None],
            batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yields ``(images, labels)`` chunks of at most ``batch_size`` (labels None if unlabeled) of an
    ``ImageData`` or an ``(images, labels)`` pair (the one batching of in-memory images)."""
    images, labels = (data.images, data.labels) if isinstance(data, ImageData) else data
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        yield images[start:stop], None if labels is None else labels[start:stop]


def random_images(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """`n` standard-Gaussian probe inputs of `shape` (C, H, W): the calibration-free stand-in for
    images (normalized images are roughly N(0, 1)); the same tensor for the same seed on every machine."""
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def _prepare_fn(spec: ModelSpec) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """Returns uint8 CHW -> uint8 CHW geometry for ``spec`` and a key naming it for the cache."""
    from torchvision.transforms.v2 import functional as TF

    channels, height, width = spec.input_size
    if spec.family == "torchvision" and spec.weights:  # the weights' own resize + center crop
        import torchvision.models as tvm

        tf = tvm.get_weight(spec.weights).transforms()
        mode = tf.interpolation

        def prepare(img: torch.Tensor) -> torch.Tensor:
            img = TF.resize(img, list(tf.resize_size), interpolation=mode, antialias=True)
            return TF.center_crop(img, list(tf.crop_size))

        return prepare, f"c{channels}-resize{tf.resize_size}-{mode.value}-crop{tf.crop_size}"

    if spec.resize_size is not None:  # the usual ImageNet pipeline, right for images of any size
        def prepare(img: torch.Tensor) -> torch.Tensor:
            img = TF.resize(img, [spec.resize_size], antialias=True)  # bilinear, shorter side
            return TF.center_crop(img, [height, width])

        return prepare, f"c{channels}-resize{spec.resize_size}-bilinear-crop{height}x{width}"

    def prepare(img: torch.Tensor) -> torch.Tensor:  # CIFAR / digits: no crop, resize only if needed
        if img.shape[-2:] != (height, width):
            img = TF.resize(img, [height, width], antialias=True)
        return img

    return prepare, f"c{channels}-{height}x{width}"


def _normalize(images: torch.Tensor, spec: ModelSpec, scale: float = 255.0) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return images.float().div_(scale).sub_(mean).div_(std)  # in place: 10k CIFAR images are 120 MB


def _layout(names: list[str], where: str) -> tuple[list[str], list[str] | None, list[int] | None]:
    """Splits relative POSIX paths into ImageFolder (``class/.../file``) or a flat unlabeled list."""
    if not names:
        raise DataError(f"empty: no files in {where}")
    images = sorted(n for n in names if is_image(n))
    if not images:
        raise DataError(f"no images in {where}: {len(names)} files, none ending in {', '.join(IMAGE_EXTENSIONS)}")
    nested = [n for n in images if "/" in n]
    if not nested:
        return images, None, None
    if len({n.split("/", 1)[0] for n in nested}) == 1 and len(nested) == len(images):
        prefix = nested[0].split("/", 1)[0] + "/"  # one wrapping folder (typical of zips): look inside
        files, classes, labels = _layout([n[len(prefix) :] for n in nested], where)
        return [prefix + f for f in files], classes, labels
    classes = sorted({n.split("/", 1)[0] for n in nested})
    return nested, classes, [classes.index(n.split("/", 1)[0]) for n in nested]


def _map_labels(classes: list[str], labels: list[int], spec: ModelSpec, where: str) -> tuple[list[int], list[str]]:
    """Maps folder classes onto the model's logits: by wnid (ImageNet), by name when they match, else by
    sorted order when there are exactly as many folders as classes."""
    by_wnid = wnid_indices(classes, spec.num_classes)
    if by_wnid is not None:  # never by the order of the folders present: 725 of 1,000 would shift
        return [by_wnid[label] for label in labels], _class_names(spec)
    def norm(s: str) -> str:
        return s.lower().replace("_", " ").replace("-", " ").strip()

    known = {norm(c): i for i, c in enumerate(spec.classes or ())}
    if classes and all(norm(c) in known for c in classes):
        lookup = [known[norm(c)] for c in classes]
        return [lookup[label] for label in labels], list(spec.classes)
    if len(classes) == spec.num_classes:  # e.g. ImageNet's wnid folders sort into logit order
        return labels, list(spec.classes) if spec.classes else classes
    raise DataError(
        f"{len(classes)} class folders in {where} ({', '.join(classes[:3])}, ...) do not match the "
        f"{spec.num_classes} classes of {spec.name}: use its class names or one folder per class"
    )


def _class_names(spec: ModelSpec) -> list[str]:
    return list(spec.classes) if spec.classes else [str(i) for i in range(spec.num_classes or 0)]


def _labels_from_file(names: list[str], files: list[str], read, spec: ModelSpec, where: str):
    """(labels, classes, note) of flat images from a labels file beside them; (None, None, "") without one."""
    label_file = find_label_file(names)
    if label_file is None:
        return None, None, ""
    try:
        table = parse_label_file(read(label_file).decode("utf-8-sig"), f"{where}/{label_file}", spec.num_classes)
    except (LabelFileError, UnicodeDecodeError) as exc:
        raise DataError(str(exc).splitlines()[0]) from None
    bases = [f.rsplit("/", 1)[-1] for f in files]
    if len(set(bases)) < len(bases):
        raise DataError(f"two images in {where} share a file name, so {label_file} cannot tell them apart")
    missing = [f for f, b in zip(files, bases) if b not in table]
    if missing:
        raise DataError(f"{len(missing)} of {len(files)} images in {where} have no label in {label_file} "
                        f"(e.g. {missing[0]})")
    return [table[b] for b in bases], _class_names(spec), f", labels from {label_file}"


def _load_files(path: Path, spec: ModelSpec, limit, seed, cache_dir, max_pixels: int = MAX_PIXELS,
                max_file_bytes: int = MAX_FILE_BYTES) -> ImageData:
    """Loads an image folder or a zip of images (read in place, nothing is extracted)."""
    names, sizes, stamp, read, close = open_source(path, max_file_bytes)
    try:
        files, classes, labels = _layout(names, str(path))
        label_note = ""
        if classes is not None:
            labels, classes = _map_labels(classes, labels, spec, str(path))
        else:
            labels, classes, label_note = _labels_from_file(names, files, read, spec, str(path))
        label_t = None if labels is None else torch.tensor(labels, dtype=torch.int64)
        subset = limit is not None and limit < len(files)
        chosen = stratified_indices(label_t, limit if subset else None, seed, n=len(files))
        prepare, prep_key = _prepare_fn(spec)
        listing = hashlib.sha256("\n".join(files).encode()).hexdigest()  # renames move labels
        key = [str(path.resolve()), len(files), listing, stamp, prep_key, max_pixels, max_file_bytes]
        full_entry = imagecache.entry_file(cache_dir, key + ["all"])
        subset_entry = imagecache.entry_file(cache_dir, key + [chosen.tolist()]) if subset else None
        blob, hit = imagecache.read([full_entry, subset_entry])  # the full entry serves any subset
        if blob is None:
            wanted = chosen.tolist()
            budget = len(wanted) * max_file_bytes  # the request's budget: images asked x the per-image cap
            declared = sum(sizes.get(files[i], 0) for i in wanted if sizes.get(files[i], 0) <= max_file_bytes)
            if declared > budget:
                raise DataError(f"the {len(wanted)} images asked from {path} inflate to {declared:,} bytes, "
                                f"over the budget of {budget:,}; refusing")
            ok, decoded, skipped = read_decode(files, wanted, read, spec.input_size[0], prepare, max_pixels, budget)
            if not ok:
                raise DataError(f"none of the {len(wanted)} images in {path} decode (e.g. {skipped[0]})")
            images = torch.stack(decoded)
            del decoded
            blob = {"index": torch.tensor(ok), "images": images, "skipped": skipped}
            imagecache.write(subset_entry if subset else full_entry, blob)
    finally:
        close()
    rows = torch.isin(blob["index"], chosen).nonzero().flatten()
    index = blob["index"][rows]
    labels_out = None if label_t is None else label_t[index]
    chosen_names = {files[i] for i in chosen.tolist()}
    skipped = [s for s in blob["skipped"] if s.partition(": ")[0] in chosen_names]
    how = f"{len(index)} stratified (seed {seed}) of" if subset else "all"
    kind = "unlabeled images" if classes is None else f"images in {len(set(labels))} classes"
    source = f"{path}: {how} {len(files)} {kind}{label_note}" + (f", {len(skipped)} unreadable skipped" if skipped else "")
    present = 0 if labels_out is None else int(labels_out.unique().numel())
    images = _normalize(blob["images"][rows], spec)
    return ImageData(images, labels_out, classes, source, present, skipped, from_cache=hit is not None)


def _from_arrays(images, labels, spec: ModelSpec, limit, seed, source: str, classes, scale: float) -> ImageData:
    """Subsets and normalizes in-memory images (digits, torchvision CIFAR-10)."""
    chosen = stratified_indices(labels, limit, seed)
    n_total = len(labels)
    images, labels = images[chosen], labels[chosen]
    if images.shape[1:] != torch.Size(spec.input_size):
        raise DataError(f"{source} images are {'x'.join(map(str, images.shape[1:]))}, but {spec.name} expects "
                        f"{'x'.join(map(str, spec.input_size))}")
    how = f"all {n_total}" if len(chosen) == n_total else f"{len(chosen)} stratified (seed {seed}) of {n_total}"
    return ImageData(_normalize(images, spec, scale), labels, list(classes), f"{source}: {how} images",
                     int(labels.unique().numel()))


def load_data(
    dataset_or_path: str | os.PathLike,
    spec: ModelSpec,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    allow_download: bool = False,
    max_pixels: int = MAX_PIXELS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> ImageData:
    """Loads evaluation images preprocessed for ``spec``.

    Args:
        dataset_or_path: ``"digits"`` (bundled; the training script's split), ``"cifar10"``
            (torchvision's copy in ``cache_dir``), or a path: an ``ImageFolder``-style folder
            (class sub-folders), a flat folder of unlabeled images, or a ``.zip`` of either.
        spec: The model the images are for (input size, normalization, classes).
        split: ``"train"``/``"test"`` (``"all"`` for digits); folders ignore it.
        limit: Keep this many images, stratified by class; None keeps all.
        seed: Seed of the subset.
        cache_dir: Where decoded images are cached (None: no cache); CIFAR-10 downloads go here too.
        allow_download: Whether ``"cifar10"`` may be downloaded.
        max_pixels: Images with more pixels are skipped with a reason, read from the header before
            decoding (decompression bombs).
        max_file_bytes: Image files (or archive members, as inflated) larger than this are skipped;
            an archive is read one member at a time under (images asked) x this budget.

    Returns:
        The images, labels and a description of where they came from.

    Raises:
        DataError: Missing, empty or unreadable input, or classes that do not fit the model.

    Example:
        >>> data = load_data("/data/cifar10-test", get_spec("resnet20"), limit=500, cache_dir=cache_dir())
    """
    if spec.input_size is None or spec.mean is None:
        raise DataError(f"model {spec.name} has no input size or normalization: load it with a reference spec")
    if dataset_or_path == "digits":
        from fpxint.zoo.digits import digits_split

        x, y = digits_split(split)
        if spec.input_size[0] != 1:
            raise DataError(f"digits images are 1x8x8 grayscale, but {spec.name} expects {spec.input_size}")
        # Digits pixels are 0..16; scaling by 16 is the training script's pixel/16.
        names = [str(i) for i in range(10)]
        return _from_arrays(x, y, spec, limit, seed, f"sklearn digits ({split} split)", names, 16.0)
    if dataset_or_path == "cifar10":
        return _torchvision_cifar10(spec, split, limit, seed, cache_dir, allow_download)
    return _load_files(Path(dataset_or_path).expanduser(), spec, limit, seed, cache_dir, max_pixels, max_file_bytes)


def _torchvision_cifar10(spec, split, limit, seed, cache_dir, allow_download) -> ImageData:
    from torchvision.datasets import CIFAR10

    if cache_dir is None:
        raise DataError("torchvision CIFAR-10 needs a cache_dir to live in (or give the cifar10-test folder)")
    root = Path(cache_dir) / "cifar10"
    try:
        ds = CIFAR10(str(root), train=split == "train", download=allow_download)
    except Exception as exc:  # torchvision raises RuntimeError when absent, URLError when offline
        hint = "downloading failed" if allow_download else "downloading is off"
        raise DataError(f"CIFAR-10 is not in {root} and {hint} ({str(exc).splitlines()[0][:80]})") from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    source = f"torchvision CIFAR-10 {split} ({root})"
    return _from_arrays(images, torch.tensor(ds.targets), spec, limit, seed, source, ds.classes, 255.0)
