"""``mpidec train`` (arguments as on its command line) with one more model, ``heavy_cnn``: the
small CNN plus a ballast buffer of ``MPIDEC_TEST_BALLAST_MB`` megabytes (200), saved in
every checkpoint and never trained, so steps stay fast while a checkpoint takes seconds
(run by test_preemption.py)."""

import os
import sys

import torch

from mpidec import cli
from mpidec.train import models


class HeavyCNN(models.SmallCNN):
    def __init__(self, input_shape, num_classes):
        super().__init__(input_shape, num_classes)
        ballast = int(os.environ.get("MPIDEC_TEST_BALLAST_MB", "200")) << 20
        self.register_buffer("ballast", torch.zeros(ballast, dtype=torch.uint8))


models.MODELS["heavy_cnn"] = HeavyCNN
sys.exit(cli.main(["train", *sys.argv[1:]]))
