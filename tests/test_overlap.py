"""Overlap: bucket pipelines and PmSGD's averaging during backward change no number."""

import numpy as np
import pytest
import torch

from mpidec.comm import Simulator
from mpidec.optim.buckets import make_buckets
from oracles import ALGORITHM_CASES, mlp_worker

N = 4


@pytest.mark.parametrize("algorithm, kwargs", ALGORITHM_CASES, ids=lambda c: str(c))
def test_bucket_pipeline_and_overlap_equal_one_bucket_without_overlap(algorithm, kwargs):
    plain = Simulator(N).run(mlp_worker, algorithm, overlap=False, bucket_bytes=float("inf"), **kwargs)
    piped = Simulator(N).run(mlp_worker, algorithm, overlap=True, bucket_bytes=100, **kwargs)
    for (a, buckets_a, averaged_a), (b, buckets_b, averaged_b) in zip(plain, piped):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)
        assert buckets_a == 1 and buckets_b >= 3
        assert not any(averaged_a)
        assert all(averaged_b) == (algorithm == "PmSGD")  # backward itself averaged PmSGD's gradients


def test_buckets_are_cut_last_parameters_first():
    params = [torch.zeros(n) for n in (10, 20, 30, 40)]  # 40, 80, 120, 160 bytes
    group = {}
    buckets = make_buckets([(p, group) for p in params], bucket_bytes=150)
    assert [[p.numel() for p, _ in b.pairs] for b in buckets] == [[40], [20, 30], [10]]
