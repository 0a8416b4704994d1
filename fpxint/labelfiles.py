"""Labels taken from the data, never from the order of the folders present.

Two layouts carry their own labels:

- flat image files beside a labels file: ``labels.csv`` (header ``file,class_index[,wnid]``) or
  ImageNet's ``val.txt`` (``file index`` per line, no header);
- an ``ImageFolder`` tree whose folders are WordNet ids (``n01440764/...``): each folder maps to its
  index in the sorted list of the 1,000 ImageNet-1k wnids shipped in ``fpxint/classes``. With 725 of
  the 1,000 classes present, numbering the folders present would give wrong labels.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from importlib import resources

__all__ = ["LABEL_FILES", "imagenet_wnids", "wnid_indices", "parse_label_file", "find_label_file"]

LABEL_FILES = ("labels.csv", "val.txt")  # looked for beside the images, in this order
_WNID = re.compile(r"n\d{8}")


class LabelFileError(ValueError):
    """A labels file could not be read; the message is one line naming the file and the line."""


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k wnids in logit order (sorted), from the package's ``classes`` data."""
    text = resources.files("fpxint").joinpath("classes/imagenet1k_wnids.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def wnid_indices(folders: list[str], num_classes: int | None) -> list[int] | None:
    """Each folder's ImageNet-1k index when every folder is a known wnid and the model has 1,000
    classes; None otherwise (the caller then matches folders by class name)."""
    if num_classes != 1000 or not folders or not all(_WNID.fullmatch(f) for f in folders):
        return None
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    return [index[f] for f in folders] if all(f in index for f in folders) else None


def find_label_file(names: list[str]) -> str | None:
    """The labels file among a listing's relative names: at the top, or inside one wrapping folder."""
    for depth in (0, 1):
        for wanted in LABEL_FILES:
            hits = [n for n in names if n.count("/") == depth and n.rsplit("/", 1)[-1] == wanted]
            if len(hits) == 1:
                return hits[0]
    return None


def parse_label_file(text: str, where: str, num_classes: int | None) -> dict[str, int]:
    """``{file base name: class index}`` from a ``labels.csv`` or ``val.txt`` text.

    Raises:
        LabelFileError: A malformed line, an index outside ``0..num_classes-1``, or a file listed twice.
    """
    lines = text.splitlines()
    if lines and lines[0].lower().startswith("file,"):
        reader = csv.DictReader(io.StringIO(text))
        if "class_index" not in (reader.fieldnames or ()):
            raise LabelFileError(f"{where}: the header needs the columns file,class_index (has {lines[0]})")
        rows = [(n + 2, r["file"], r["class_index"]) for n, r in enumerate(reader)]
    else:
        rows = []
        for n, line in enumerate(lines, 1):
            if line.strip():
                parts = line.split()
                if len(parts) != 2:
                    raise LabelFileError(f"{where} line {n}: expected 'file index', got {line[:60]!r}")
                rows.append((n, *parts))
    labels: dict[str, int] = {}
    for n, name, index in rows:
        base = (name or "").strip().rsplit("/", 1)[-1]
        try:
            value = int(index)
        except (TypeError, ValueError):
            raise LabelFileError(f"{where} line {n}: class index {index!r} is not an integer") from None
        if not base or value < 0 or (num_classes is not None and value >= num_classes):
            raise LabelFileError(f"{where} line {n}: {name!r} -> {value} is not a file and a class index "
                                 f"0..{(num_classes or 1) - 1}")
        if base in labels:
            raise LabelFileError(f"{where} line {n}: {base} is listed twice")
        labels[base] = value
    if not labels:
        raise LabelFileError(f"{where}: no labels in the file")
    return labels
