"""Models by name: a small CNN for the embedded digits, the CIFAR ResNet-20, and
torchvision's ResNet-18/50 and MobileNetV2 (randomly initialised: nothing is downloaded).

Build the model under the same seed on every rank: decentralized algorithms start from
identical models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, one 2x2 pooling, two linear layers (about 40k parameters at 8x8)."""

    def __init__(self, input_shape=(1, 8, 8), num_classes: int = 10):
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * (height // 2) * (width // 2), 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions; the shortcut subsamples and zero-pads channels (option A of He et al.)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.extra_channels = stride, planes - in_planes

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.extra_channels:
            half = self.extra_channels // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, half, self.extra_channels - half))
        return F.relu(out + shortcut)


class ResNet20(nn.Module):
    """The CIFAR ResNet-20 of He et al. (2016): 3 stages of 3 blocks, 16/32/64 channels (0.27M parameters)."""

    def __init__(self, input_shape=(3, 32, 32), num_classes: int = 10, blocks_per_stage: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for block in range(blocks_per_stage):
                layers.append(_BasicBlock(in_planes, planes, stride if block == 0 else 1))
                in_planes = planes
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = self.stages(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _torchvision(name: str):
    def build(input_shape, num_classes):
        import torchvision

        if input_shape[0] != 3:
            raise ConfigError(f"--model {name} takes 3-channel images but the dataset has {input_shape[0]}: "
                              "use --model small_cnn or resnet20")
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    return build


MODELS = {"small_cnn": SmallCNN, "resnet20": ResNet20, "resnet18": _torchvision("resnet18"),
          "resnet50": _torchvision("resnet50"), "mobilenet_v2": _torchvision("mobilenet_v2")}
DEFAULT_MODEL = {"digits": "small_cnn", "synthetic": "resnet20", "cifar10": "resnet20", "imagenet": "resnet50"}


def build(name: str, input_shape, num_classes: int, seed: int = 0) -> nn.Module:
    """Model ``name`` initialised from ``seed`` (the same weights on every rank)."""
    if name not in MODELS:
        raise ConfigError(f"--model {name!r} is not one of: {', '.join(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](tuple(input_shape), num_classes)
