"""What a rank trains on and with: the datasets (mpidec.train.data), reproducible batches
(mpidec.train.batches) and the models (mpidec.train.models)."""

import numpy as np
import pytest
import torch

from mpidec.train import TrainConfig, ConfigError, config, data, models
from mpidec.train.batches import batches


@pytest.mark.parametrize("name", config.DATASETS)
def test_every_dataset_of_the_flags_has_a_loader(name, tmp_path):
    """``--dataset`` offers config.DATASETS (config must not import torch): each one loads, or
    says which folder to pass; none is unknown to mpidec.train.data."""
    try:
        loaded = data.load(TrainConfig(dataset=name, data_dir=None if name in ("digits", "synthetic") else str(tmp_path)))
    except ConfigError as exc:
        assert "--data-dir" in str(exc)
    else:
        assert loaded.name == name
    assert set(data._LOADERS) == set(config.DATASETS)  # and data.py loads no dataset the flags hide


def test_digits_are_embedded_and_split_the_same_way_every_time():
    d = data.load(TrainConfig())
    assert (len(d.train), len(d.test), d.input_shape, d.num_classes) == (1437, 360, (1, 8, 8), 10)
    assert d.train.images.min() >= -1 and d.train.images.max() <= 1
    assert torch.equal(d.test.labels, data.load(TrainConfig(seed=5)).test.labels)


def test_an_imagenet_style_folder_loads_with_reproducible_augmentation(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("cat", "dog", "eel"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{i}.png")
    d = data.load(TrainConfig(dataset="imagenet", data_dir=str(tmp_path), image_size=16))
    assert (len(d.train), len(d.test), d.num_classes, d.input_shape) == (12, 12, 3, (3, 16, 16))
    assert list(d.train_labels) == [0] * 4 + [1] * 4 + [2] * 4
    order = np.arange(12)[::-1]
    whole = list(batches(d.train, order, 4, seed=1, epoch=3))
    tail = list(batches(d.train, order, 4, start=1, seed=1, epoch=3, workers=2))
    assert [x.shape for x, _ in whole] == [(4, 3, 16, 16)] * 3
    for (x, y), (x2, y2) in zip(whole[1:], tail):
        assert torch.equal(x, x2) and torch.equal(y, y2)  # same crops from any position, any workers
    other_epoch = next(batches(d.train, order, 4, seed=1, epoch=4))[0]
    assert not torch.equal(whole[0][0], other_epoch)


def test_synthetic_samples_depend_on_their_index_only():
    d = data.load(TrainConfig(dataset="synthetic", image_size=8))
    x, y = d.train[13]
    assert x.shape == (3, 8, 8) and y == 3 and torch.equal(x, d.train[13][0])
    assert list(d.train_labels[:12]) == list(range(10)) + [0, 1]


@pytest.mark.parametrize("name, shape", [("small_cnn", (1, 8, 8)), ("resnet20", (3, 32, 32)),
                                         ("resnet18", (3, 32, 32)), ("mobilenet_v2", (3, 32, 32)),
                                         ("resnet50", (3, 32, 32))])
def test_models_build_the_same_on_every_rank_and_classify(name, shape):
    a, b = models.build(name, shape, 7, seed=4), models.build(name, shape, 7, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    a.eval()
    assert a(torch.randn(2, *shape)).shape == (2, 7)


def test_resnet20_has_the_papers_size():
    assert sum(p.numel() for p in models.build("resnet20", (3, 32, 32), 10).parameters()) == pytest.approx(
        0.27e6, rel=0.01)
