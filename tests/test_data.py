"""Data sources on real files: digits split, CIFAR-10 JPEG folder, image folders and zips, the cache."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fpxint.data import DataError, batches, load_data, stratified_indices
from fpxint.zoo import get_spec

CIFAR = get_spec("resnet20")


def write_images(folder: Path, n: int, size=(32, 32), ext="png", seed=0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img{i:03d}.{ext}"
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# ---- stratified subsets --------------------------------------------------------------------


def test_stratified_subset_has_equal_counts_and_is_deterministic():
    labels = torch.arange(10).repeat_interleave(1000)  # ImageFolder order: by class
    idx = stratified_indices(labels, 500, seed=0)
    assert labels[idx].bincount().tolist() == [50] * 10
    assert torch.equal(idx, stratified_indices(labels, 500, seed=0))
    assert not torch.equal(idx, stratified_indices(labels, 500, seed=1))
    assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == 500


def test_remainder_is_spread_one_per_class_by_seed():
    labels = torch.arange(10).repeat_interleave(100)
    counts = labels[stratified_indices(labels, 503, seed=0)].bincount()
    assert counts.sum() == 503 and sorted(counts.tolist()) == [50] * 7 + [51] * 3
    other = labels[stratified_indices(labels, 503, seed=4)].bincount()
    assert sorted(other.tolist()) == [50] * 7 + [51] * 3


def test_small_classes_give_their_share_to_the_others():
    labels = torch.tensor([0] * 3 + [1] * 100 + [2] * 100)
    counts = labels[stratified_indices(labels, 60, seed=0)].bincount()
    assert counts.tolist() == [3, 29, 28] or counts.tolist() == [3, 28, 29]


def test_unlabeled_subset_is_a_seeded_permutation_prefix():
    idx = stratified_indices(None, 7, seed=3, n=100)
    assert len(idx) == 7 and torch.equal(idx, stratified_indices(None, 7, seed=3, n=100))
    assert torch.equal(stratified_indices(None, None, n=5), torch.arange(5))
    assert torch.equal(stratified_indices(torch.zeros(4, dtype=torch.long), 10), torch.arange(4))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=300), st.integers(1, 320), st.integers(0, 5))
def test_stratified_subset_invariants(raw, limit, seed):
    labels = torch.tensor(raw)
    idx = stratified_indices(labels, limit, seed)
    assert len(idx) == min(limit, len(labels)) and len(idx.unique()) == len(idx)
    counts, available = labels[idx].bincount(minlength=7), labels.bincount(minlength=7)
    # A class below the largest count is exhausted; otherwise counts differ by at most one.
    top = counts.max()
    assert all(c >= top - 1 or c == a for c, a in zip(counts.tolist(), available.tolist()))


# ---- digits and CIFAR-10 -------------------------------------------------------------------


def test_digits_test_split_is_the_training_scripts_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    spec = get_spec("digits_cnn")
    data = load_data("digits", spec)
    bunch = load_digits()
    split = train_test_split(bunch.images, bunch.target, test_size=0.25, stratify=bunch.target, random_state=0)
    x_test, y_test = split[1], split[3]
    expected = (torch.tensor(x_test, dtype=torch.float32) / 16 - spec.mean[0]) / spec.std[0]
    assert torch.allclose(data.images[:, 0], expected) and torch.equal(data.labels, torch.tensor(y_test))
    assert len(load_data("digits", spec, split="train")) == 1347 and data.n_classes_present == 10
    assert load_data("digits", spec, limit=100).labels.bincount().tolist() == [10] * 10


def test_cifar_folder_matches_torchvision_preprocessing(cifar_test_dir):
    from torchvision import transforms

    data = load_data(cifar_test_dir, CIFAR, limit=100, seed=0)
    assert data.images.shape == (100, 3, 32, 32) and data.labels.bincount().tolist() == [10] * 10
    assert data.classes == list(CIFAR.classes) and data.n_classes_present == 10
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR.mean, CIFAR.std)])
    first_cat = sorted((cifar_test_dir / "cat").iterdir())
    picked = load_data(cifar_test_dir / "cat", CIFAR, limit=3, seed=0)  # flat folder: unlabeled
    idx = stratified_indices(None, 3, seed=0, n=len(first_cat))
    expected = torch.stack([reference(Image.open(first_cat[i]).convert("RGB")) for i in idx])
    assert torch.allclose(picked.images, expected, atol=1e-5) and picked.labels is None


def test_decoded_images_are_cached(cifar_test_dir, tmp_path):
    first = load_data(cifar_test_dir, CIFAR, limit=200, seed=1, cache_dir=tmp_path)
    files = list((tmp_path / "images").glob("*.pt"))
    assert not first.from_cache and len(files) == 1
    second = load_data(cifar_test_dir, CIFAR, limit=200, seed=1, cache_dir=tmp_path)
    assert second.from_cache and torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    other_seed = load_data(cifar_test_dir, CIFAR, limit=200, seed=2, cache_dir=tmp_path)
    assert not other_seed.from_cache  # a different subset is a different cache entry


def test_full_decode_cache_serves_any_subset(tmp_path):
    for cls in ("cat", "dog", "ship"):
        write_images(tmp_path / "data" / cls, 12, ext="jpg", seed=len(cls))
    full = load_data(tmp_path / "data", CIFAR, cache_dir=tmp_path / "cache")
    subset = load_data(tmp_path / "data", CIFAR, limit=6, seed=0, cache_dir=tmp_path / "cache")
    assert subset.from_cache and subset.labels.bincount(minlength=10)[[3, 5, 8]].tolist() == [2, 2, 2]
    direct = load_data(tmp_path / "data", CIFAR, limit=6, seed=0)
    assert torch.equal(subset.images, direct.images) and len(full) == 36
    (tmp_path / "data" / "cat" / "img000.jpg").touch()  # a changed file invalidates the entry
    assert not load_data(tmp_path / "data", CIFAR, cache_dir=tmp_path / "cache").from_cache


def test_torchvision_cifar10_needs_download_or_files(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 is not in .* and downloading is off"):
        load_data("cifar10", CIFAR, cache_dir=tmp_path)


# ---- folders and zips ----------------------------------------------------------------------


def test_class_folders_map_onto_the_models_class_names(tmp_path):
    for cls in ("truck", "airplane", "frog"):
        write_images(tmp_path / cls, 4)
    data = load_data(tmp_path, CIFAR)
    assert data.labels.tolist() == [0] * 4 + [6] * 4 + [9] * 4  # airplane, frog, truck in CIFAR order
    assert data.n_classes_present == 3 and "12 images in 3 classes" in data.source


def test_class_folders_that_do_not_fit_the_model_raise(tmp_path):
    for cls in ("apples", "pears"):
        write_images(tmp_path / cls, 2)
    with pytest.raises(DataError, match="2 class folders in .* do not match the 10 classes of resnet20"):
        load_data(tmp_path, CIFAR)


def test_unlabeled_folder_resized_to_the_model_input(tmp_path):
    write_images(tmp_path, 5, size=(48, 40), ext="jpg")
    (tmp_path / "notes.txt").write_text("ignored")
    data = load_data(tmp_path, CIFAR, limit=3, seed=0)
    assert data.labels is None and data.classes is None and data.n_classes_present == 0
    assert data.images.shape == (3, 3, 32, 32)
    digits = load_data(tmp_path, get_spec("digits_cnn"))
    assert digits.images.shape == (5, 1, 8, 8)  # grayscale, 8x8


def test_imagenet_folder_uses_the_weights_transforms(tmp_path):
    import torchvision.models as tvm

    spec = get_spec("resnet18")
    path = write_images(tmp_path / "imgs", 2, size=(300, 260))[0]
    data = load_data(tmp_path / "imgs", spec)
    reference = tvm.get_weight(spec.weights).transforms()(Image.open(path).convert("RGB"))
    assert data.images.shape == (2, 3, 224, 224)
    # resizing the uint8 tensor and the PIL image rounds differently, by one grey level at most
    assert (data.images[0] - reference).abs().max() < 1.01 / 255 / min(spec.std)  # measured: 1 level at most


@pytest.mark.parametrize("wrapped", [True, False])
def test_zip_of_images(wrapped, tmp_path):
    folder = tmp_path / "src"
    for cls in ("bird", "deer"):
        write_images(folder / cls, 3, ext="jpg")
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*.jpg")):
            zf.write(p, ("top/" if wrapped else "") + p.relative_to(folder).as_posix())
        zf.writestr("__MACOSX/._junk.jpg", b"resource fork")
    data = load_data(archive, CIFAR, cache_dir=tmp_path / "cache")
    assert data.labels.tolist() == [2] * 3 + [4] * 3 and data.images.shape == (6, 3, 32, 32)
    assert torch.equal(data.images, load_data(folder, CIFAR).images)
    assert load_data(archive, CIFAR, cache_dir=tmp_path / "cache").from_cache


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    write_images(tmp_path / "dog", 4)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "dog" / "zero.jpg").write_bytes(b"")
    data = load_data(tmp_path, CIFAR)
    assert len(data) == 4 and len(data.skipped) == 2 and "2 unreadable skipped" in data.source
    assert any(s.startswith("dog/broken.png: ") for s in data.skipped)


@pytest.mark.parametrize("case,expected", [
    ("missing", "no such file or folder: .*missing"),
    ("empty", "empty: no files in"),
    ("no_images", "no images in .*: 2 files, none ending in .jpg"),
    ("all_corrupt", "none of the 2 images in .* decode"),
    ("bad_zip", "not a readable zip archive: .*bad.zip"),
])
def test_bad_inputs_raise_one_line(case, expected, tmp_path):
    target = tmp_path / case
    if case == "empty":
        target.mkdir()
    elif case == "no_images":
        target.mkdir()
        (target / "a.txt").write_text("x")
        (target / "b.csv").write_text("y")
    elif case == "all_corrupt":
        target.mkdir()
        (target / "a.jpg").write_bytes(b"\xff\xd8 not really")
        (target / "b.png").write_text("text")
    elif case == "bad_zip":
        target = tmp_path / "bad.zip"
        target.write_text("not a zip")
    with pytest.raises(DataError, match=expected) as err:
        load_data(target, CIFAR)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)


def test_batches_cover_the_data_in_order():
    data = load_data("digits", get_spec("digits_cnn"), limit=50)
    chunks = list(batches(data, 16))
    assert [len(x) for x, _ in chunks] == [16, 16, 16, 2]
    assert torch.equal(torch.cat([x for x, _ in chunks]), data.images)
    assert torch.equal(torch.cat([y for _, y in chunks]), data.labels)
