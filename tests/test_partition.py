"""Which samples each rank sees (mpidec.train.partition): iid, label-sorted and Dirichlet
shares, the same on every rank from the seed alone, whole batches per epoch."""

import numpy as np
import pytest

from mpidec.train import partition


def test_iid_epochs_are_disjoint_equal_blocks_of_a_fresh_global_permutation():
    n, size = 103, 4
    for epoch in range(3):
        blocks = [partition.iid_order(n, size, rank, seed=7, epoch=epoch) for rank in range(size)]
        everything = np.concatenate(blocks)
        assert all(len(b) == n // size for b in blocks)
        assert len(set(everything)) == len(everything) == size * (n // size)
        assert everything.min() >= 0 and everything.max() < n
    assert not np.array_equal(partition.iid_order(n, size, 0, 7, 0), partition.iid_order(n, size, 0, 7, 1))
    assert np.array_equal(partition.iid_order(n, size, 2, 7, 1), partition.iid_order(n, size, 2, 7, 1))
    assert not np.array_equal(partition.iid_order(n, size, 0, 7, 0), partition.iid_order(n, size, 0, 8, 0))


def test_label_sorted_shares_are_contiguous_label_blocks():
    labels = np.repeat(np.arange(8), 10)[::-1]  # 80 samples, 8 classes
    shares = partition.label_sorted_shares(labels, 4)
    assert sorted(np.concatenate(shares)) == list(range(80))
    assert [sorted(set(labels[s])) for s in shares] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def _classes_per_rank(labels, alpha, size=8):
    shares = partition.dirichlet_shares(labels, size, alpha, seed=3)
    assert sorted(np.concatenate(shares)) == list(range(len(labels)))  # a partition of every sample
    assert all(len(s) for s in shares)
    return np.mean([len(set(labels[s])) for s in shares])


def test_dirichlet_shares_partition_the_samples_and_alpha_sets_the_skew():
    labels = np.repeat(np.arange(10), 100)
    assert _classes_per_rank(labels, alpha=0.05) < 4 < 9.5 < _classes_per_rank(labels, alpha=100.0)
    assert all(np.array_equal(a, b) for a, b in zip(partition.dirichlet_shares(labels, 8, 0.5, 3),
                                                    partition.dirichlet_shares(labels, 8, 0.5, 3)))


def test_a_partition_gives_every_rank_the_same_whole_number_of_batches():
    labels = np.repeat(np.arange(10), 37)  # 370 samples
    parts = [partition.Partition(labels, 4, rank, "dirichlet", seed=1, alpha=0.2, batch_size=16) for rank in range(4)]
    assert {p.steps_per_epoch for p in parts} == {370 // 4 // 16}
    for p in parts:
        order = p.epoch_order(epoch=2)
        assert len(order) == p.samples_per_rank == 5 * 16
        assert set(order) <= set(p.share)
        if len(p.share) >= len(order):
            assert len(set(order)) == len(order)  # no repeats while the share is large enough
    with pytest.raises(ValueError, match="lower --batch-size"):
        partition.Partition(labels, 4, 0, batch_size=100)
