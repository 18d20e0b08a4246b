"""Datasets: an embedded one, a generated one, and local folders read through torchvision.

- ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), shipped
  inside the installed sklearn package: no download, loads in milliseconds. 1437 train /
  360 test by a fixed split.
- ``synthetic``: images generated from their index (class prototype plus noise), for
  measuring speed without a disk or a download.
- ``cifar10``: ``--data-dir`` holding ``cifar-10-batches-py/`` (torchvision's layout).
- ``imagenet``: ``--data-dir`` holding ``train/`` and ``val/`` with one folder per class.

Nothing is ever downloaded: compute nodes are usually offline, and a download started by
many ranks at once would race. A missing folder is a :class:`ConfigError` saying what to
pass instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError

DIGITS_TEST_SAMPLES = 360
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_GET_CIFAR = ("run python -c \"import torchvision; torchvision.datasets.CIFAR10('DIR', download=True)\" "
              "where there is internet access and copy DIR here")


@dataclass
class Data:
    """Train and test sets of one dataset; ``train_labels`` drives the partition."""

    name: str
    train: object            # TensorSamples or a torch Dataset of (image, label)
    test: object
    train_labels: np.ndarray
    num_classes: int
    input_shape: tuple       # (channels, height, width)

    def describe(self) -> str:
        c, h, w = self.input_shape
        return f"{self.name} ({len(self.train)} train / {len(self.test)} test, {c}x{h}x{w}, {self.num_classes} classes)"


class TensorSamples:
    """A dataset held as two tensors; batches are sliced, not collated sample by sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)


class SyntheticImages(torch.utils.data.Dataset):
    """Sample ``i``: class ``i % num_classes``, its fixed random prototype plus unit noise
    drawn from a generator seeded by ``(seed, i)``: the same sample on every call."""

    def __init__(self, num_samples: int, shape: tuple, num_classes: int = 10, seed: int = 0):
        self.num_samples, self.shape, self.num_classes, self.seed = num_samples, shape, num_classes, seed
        prototypes = torch.Generator().manual_seed(12345)
        self.prototypes = torch.randn((num_classes, *shape), generator=prototypes)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int):
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + i))
        label = i % self.num_classes
        return self.prototypes[label] + noise, label

    @property
    def labels(self) -> np.ndarray:
        return np.arange(self.num_samples) % self.num_classes


def load(config) -> Data:
    """The dataset of a :class:`~mpidec.train.config.TrainConfig`; ConfigError if it cannot be found."""
    if config.data_dir is not None and "://" in config.data_dir:
        raise ConfigError(f"--data-dir {config.data_dir!r} is a URL: mpidec train never downloads. "
                          "Download the dataset once, then pass the local folder as --data-dir")
    if config.dataset in ("digits", "synthetic") and config.data_dir is not None:
        raise ConfigError(f"--dataset {config.dataset} needs no files: drop --data-dir")
    if config.dataset in ("digits", "cifar10") and config.image_size is not None:
        raise ConfigError(f"--dataset {config.dataset} has a fixed image size: drop --image-size")
    return _LOADERS[config.dataset](config)


def digits(config) -> Data:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # pixels 0..16 -> [-1, 1]
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(labels)))  # fixed split, whatever --seed
    train, test = order[:-DIGITS_TEST_SAMPLES], order[-DIGITS_TEST_SAMPLES:]
    return Data("digits", TensorSamples(images[train], labels[train]), TensorSamples(images[test], labels[test]),
                labels[train].numpy(), 10, (1, 8, 8))


def synthetic(config) -> Data:
    size = config.image_size or 32
    shape = (3, size, size)
    train, test = SyntheticImages(4096, shape, seed=1), SyntheticImages(1024, shape, seed=2)
    return Data("synthetic", train, test, train.labels, 10, shape)


def cifar10(config) -> Data:
    import torchvision
    from torchvision import transforms as T

    root = _existing_dir(config, "cifar10", "cifar-10-batches-py/", _GET_CIFAR)
    if root.name == "cifar-10-batches-py":
        root = root.parent
    if not (root / "cifar-10-batches-py").is_dir():
        raise ConfigError(f"--data-dir {root}: no cifar-10-batches-py/ inside. Pass the folder that holds it "
                          f"(to get it: {_GET_CIFAR})")
    normalize = [T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
    augment = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    try:
        train = torchvision.datasets.CIFAR10(str(root), train=True, transform=T.Compose(augment + normalize))
        test = torchvision.datasets.CIFAR10(str(root), train=False, transform=T.Compose(normalize))
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise ConfigError(f"--data-dir {root}: CIFAR-10 is incomplete or corrupted ({exc}); "
                          f"replace cifar-10-batches-py/ with a fresh copy") from exc
    return Data("cifar10", train, test, np.asarray(train.targets), 10, (3, 32, 32))


def imagenet(config) -> Data:
    import torchvision
    from torchvision import transforms as T

    root = _existing_dir(config, "imagenet", "train/ and val/ with one subfolder per class",
                         "put the images in DIR/train/CLASS/*.JPEG and DIR/val/CLASS/*.JPEG")
    size = config.image_size or 224
    normalize = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *normalize])
    test_tf = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), *normalize])
    sets = {}
    for split, transform in (("train", train_tf), ("val", test_tf)):
        if not (root / split).is_dir():
            raise ConfigError(f"--data-dir {root}: no {split}/ folder inside; the layout is "
                              f"{root}/train/CLASS/IMAGE and {root}/val/CLASS/IMAGE")
        try:
            sets[split] = torchvision.datasets.ImageFolder(str(root / split), transform=transform)
        except FileNotFoundError as exc:  # no class folder, or no image in one
            raise ConfigError(f"--data-dir {root}/{split}: {exc}") from exc
    if sets["train"].classes != sets["val"].classes:
        raise ConfigError(f"--data-dir {root}: train/ and val/ have different class folders")
    return Data("imagenet", sets["train"], sets["val"], np.asarray(sets["train"].targets),
                len(sets["train"].classes), (3, size, size))


def _existing_dir(config, dataset: str, holds: str, how: str) -> Path:
    if config.data_dir is None:
        raise ConfigError(f"--dataset {dataset} reads local files: pass --data-dir DIR, the folder holding {holds} "
                          f"(to get it: {how}). --dataset digits needs no files")
    root = Path(config.data_dir).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--data-dir {root}: no such folder. Pass the folder holding {holds} (to get it: {how})")
    return root


_LOADERS = {"digits": digits, "synthetic": synthetic, "cifar10": cifar10, "imagenet": imagenet}
