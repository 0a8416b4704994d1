"""Labels from the data: labels files beside flat images, and wnid folders mapped by wnid, never by order."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fpxint.data import DataError, load_data
from fpxint.labelfiles import LabelFileError, imagenet_wnids, parse_label_file, wnid_indices
from fpxint.zoo import get_spec

LITE0 = get_spec("efficientnet_lite0")
# Three wnids far apart in the sorted list of 1,000, with their true ImageNet-1k indices.
TRUE = {"n01440764": 0, "n02951358": 472, "n15075141": 999}


def _flat_image(path: Path, value: int) -> None:
    """A constant-colour image: its colour survives resize and crop, so it identifies the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 30, 3), value, dtype=np.uint8)).save(path)


def _by_colour(data) -> dict[int, int]:
    """{pixel value: label}: pairs each image with its label whatever order the loader listed them in."""
    pixels = (data.images[:, 0, 0, 0] * LITE0.std[0] + LITE0.mean[0]) * 255
    return dict(zip(pixels.round().int().tolist(), data.labels.tolist()))


def test_the_wnid_list_is_sorted_and_complete():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and list(wnids) == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[999] == "n15075141"


def test_three_wnid_folders_map_to_their_true_indices(tmp_path):
    for k, wnid in enumerate(TRUE):
        _flat_image(tmp_path / wnid / "a.png", 10 + k)
    data = load_data(tmp_path, LITE0)
    # by folder order these would be 0, 1, 2
    assert sorted(data.labels.tolist()) == sorted(TRUE.values())
    assert _by_colour(data) == {10 + k: i for k, i in enumerate(TRUE.values())}
    assert data.classes[472] == LITE0.classes[472] and len(data.classes) == 1000


def test_labels_file_and_wnid_tree_give_identical_labels(tmp_path):
    flat, tree = tmp_path / "flat", tmp_path / "tree"
    rows = ["file,class_index,wnid"]
    for k, (wnid, index) in enumerate(list(TRUE.items()) * 2):  # two images per class
        name = f"ILSVRC2012_val_{k:08d}.JPEG"
        _flat_image(flat / "images" / name, 20 + k)
        _flat_image(tree / wnid / name, 20 + k)
        rows.append(f"{name},{index},{wnid}")
    (flat / "labels.csv").write_text("\n".join(rows) + "\n")
    from_file, from_tree = load_data(flat, LITE0), load_data(tree, LITE0)
    assert "labels from labels.csv" in from_file.source
    assert _by_colour(from_file) == _by_colour(from_tree) and len(_by_colour(from_file)) == 6
    assert torch.equal(from_file.labels.sort().values, from_tree.labels.sort().values)


def test_val_txt_form_is_read(tmp_path):
    for k in range(3):
        _flat_image(tmp_path / f"v{k}.png", 30 + k)
    (tmp_path / "val.txt").write_text("v0.png 5\nv1.png 999\nv2.png 0\n")
    data = load_data(tmp_path, LITE0)
    assert _by_colour(data) == {30: 5, 31: 999, 32: 0} and "labels from val.txt" in data.source


def test_the_shared_labels_match_the_csv(shared_file):
    folder = shared_file("data/imagenet-val-1300", "the ImageNet validation subset")
    table = parse_label_file((folder / "labels.csv").read_text(), "labels.csv", 1000)
    wnid_of = {r.split(",")[0]: r.split(",")[2] for r in (folder / "labels.csv").read_text().splitlines()[1:]}
    assert len(table) == 1300
    assert all(imagenet_wnids()[table[f]] == w for f, w in wnid_of.items())  # index = position of its wnid


@pytest.mark.parametrize("text, expected", [
    ("a.png 3\nb.png\n", "line 2: expected 'file index'"),
    ("file,class_index\na.png,x\n", "line 2: class index 'x' is not an integer"),
    ("file,class_index\na.png,1000\n", "0..999"),
    ("a.png 1\na.png 2\n", "a.png is listed twice"),
    ("file,label\na.png,1\n", "needs the columns file,class_index"),
])
def test_bad_label_files_raise_one_line(text, expected):
    with pytest.raises(LabelFileError, match=expected.replace("(", r"\(").replace(".", r"\.")):
        parse_label_file(text, "labels", 1000)


def test_images_missing_from_the_labels_file_raise(tmp_path):
    for k in range(2):
        _flat_image(tmp_path / f"v{k}.png", k)
    (tmp_path / "val.txt").write_text("v0.png 5\n")
    with pytest.raises(DataError, match="1 of 2 images .* have no label in val.txt"):
        load_data(tmp_path, LITE0)


def test_non_wnid_folders_and_other_models_are_not_mapped_by_wnid():
    assert wnid_indices(["n01440764", "cat"], 1000) is None
    assert wnid_indices(["n01440764"], 10) is None
    assert wnid_indices(["n01440764", "n15075141"], 1000) == [0, 999]
