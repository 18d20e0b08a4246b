"""``mpidec train`` (arguments as on its command line) with one more model, ``heavy_cnn``: the
small CNN plus a ballast buffer of ``MPIDEC_TEST_BALLAST_MB`` megabytes (200), saved in
every checkpoint and never trained, so steps stay fast while a checkpoint takes seconds
(run by test_preemption.py). ``MPIDEC_TEST_SLOW_DISK_S`` (0): seconds every checkpoint
file takes beyond its writing, as on a slow shared filesystem, so that a checkpoint
outlasts Open MPI's default grace however fast this machine's disk is."""

import os
import sys
import time

import torch

from mpidec import cli
from mpidec.train import checkpoint, models


def _slow(write, delay):
    def slowly(*args, **kwargs):
        result = write(*args, **kwargs)
        time.sleep(delay)
        return result

    return slowly


class HeavyCNN(models.SmallCNN):
    def __init__(self, input_shape, num_classes):
        super().__init__(input_shape, num_classes)
        ballast = int(os.environ.get("MPIDEC_TEST_BALLAST_MB", "200")) << 20
        self.register_buffer("ballast", torch.zeros(ballast, dtype=torch.uint8))


models.MODELS["heavy_cnn"] = HeavyCNN
if float(os.environ.get("MPIDEC_TEST_SLOW_DISK_S", "0")) > 0:
    checkpoint.atomic_write = _slow(checkpoint.atomic_write, float(os.environ["MPIDEC_TEST_SLOW_DISK_S"]))
sys.exit(cli.main(["train", *sys.argv[1:]]))
