"""Dense-matrix oracles shared by the serial and MPI tests."""

import numpy as np
import torch

# mixed shapes and dtypes, as a model's parameters and buffers can be
SPECS = [((3, 4), torch.float64), ((5,), torch.float32), ((2, 1, 3), torch.float64), ((1,), torch.float16)]


def node_tensors(n, seed=0, specs=SPECS):
    """The same random tensors for every node on every rank: node i's list is element i."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for shape, dtype in specs]
            for _ in range(n)]


def dense_gossip(models, topo, steps):
    """``X <- W_t X`` for t in steps, in float64, one matrix per tensor position."""
    out = []
    for k in range(len(models[0])):
        x = np.stack([m[k].double().numpy().reshape(-1) for m in models])
        for t in steps:
            x = topo.at(t).W @ x
        out.append(x)
    return out


def tolerance(dtype):
    return {torch.float64: 1e-13, torch.float32: 1e-6, torch.float16: 2e-2}[dtype]


def assert_rows_match(models, dense, nodes):
    for i in nodes:
        for k, t in enumerate(models[i]):
            np.testing.assert_allclose(t.double().numpy().reshape(-1), dense[k][i], rtol=0,
                                       atol=tolerance(t.dtype), err_msg=f"node {i}, tensor {k} ({t.dtype})")
