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


# ------------------------------------------------------------------ optimizers

class LeastSquares:
    """Heterogeneous least squares: node i minimises 0.5 ||A_i x - b_i||^2 (its own data)."""

    def __init__(self, n, dim=6, rows=10, seed=0):
        rng = np.random.default_rng(seed)
        self.n, self.dim = n, dim
        self.A = rng.standard_normal((n, rows, dim)) / np.sqrt(rows)
        self.b = rng.standard_normal((n, rows)) + np.arange(n)[:, None]  # different optima
        self.x0 = rng.standard_normal((n, dim))                          # different initial models

    def grads(self, X):
        """Row i: grad f_i(x_i)."""
        return np.einsum("nrd,nr->nd", self.A, np.einsum("nrd,nd->nr", self.A, X) - self.b)

    def minimiser(self):
        """argmin of (1/n) sum_i f_i."""
        H = np.einsum("nrd,nre->de", self.A, self.A)
        return np.linalg.solve(H, np.einsum("nrd,nr->d", self.A, self.b))

    def hessians(self):
        return np.einsum("nrd,nre->nde", self.A, self.A)

    def worker(self, comm, algorithm, steps, **kwargs):
        """Node ``comm.rank`` trains its own model (two parameter tensors) with ``algorithm``;
        returns the model after every step."""
        from mpidec import optim

        i = comm.rank
        x0 = torch.tensor(self.x0[i])
        params = [x0[:4].clone().requires_grad_(), x0[4:].clone().requires_grad_()]
        A, b = torch.tensor(self.A[i]), torch.tensor(self.b[i])
        opt = optim.by_name(algorithm)(params, comm=comm, **kwargs)
        trajectory = []
        for _ in range(steps):
            opt.zero_grad()
            loss = 0.5 * ((A @ torch.cat(params) - b) ** 2).sum()
            loss.backward()
            opt.step()
            trajectory.append(torch.cat(params).detach().numpy().copy())
        return np.stack(trajectory), opt


def dense_trajectory(problem, algorithm, topology, steps, lr, momentum=0.0, variant="atc", period=1,
                     momentum_averaging=True):
    """The same algorithm in matrix form (rows = nodes), the oracle for every optimizer."""
    X = problem.x0.copy()
    M = np.zeros_like(X)
    Xp, Gp = None, None
    J = np.full((problem.n, problem.n), 1 / problem.n)
    out = []
    for t in range(steps):
        W, G = topology.at(t).W, problem.grads(X)
        if algorithm in ("DSGD", "DmSGD") and variant == "atc":
            M = momentum * M + G
            X = W @ (X - lr * M)
        elif algorithm == "DmSGD":
            Y = momentum * M + G
            M, X = W @ Y, W @ (X - lr * Y)
        elif algorithm == "DecentLaM":
            Ghat = (X - W @ (X - lr * G)) / lr
            M = momentum * M + Ghat
            X = X - lr * M
        elif algorithm == "QGDmSGD":
            Xn = W @ (X - lr * (G + momentum * M))
            M = momentum * M + (1 - momentum) * (X - Xn) / lr
            X = Xn
        elif algorithm == "D2":
            H = X - lr * G if t == 0 else 2 * X - Xp - lr * (G - Gp)
            Xp, Gp, X = X, G, W @ H
        elif algorithm == "LocalSGD":
            M = momentum * M + G
            X = X - lr * M
            if (t + 1) % period == 0:
                X, M = J @ X, (J @ M if momentum_averaging else 0 * M)
        elif algorithm == "PmSGD":
            M = momentum * M + J @ G
            X = X - lr * M
        else:
            raise ValueError(algorithm)
        out.append(X)
    return np.stack(out, axis=1)  # (nodes, steps, dim)


# name, optimizer kwargs (dense_trajectory takes the same)
ALGORITHM_CASES = [
    ("DSGD", {}),
    ("DmSGD", {"momentum": 0.8}),
    ("DmSGD", {"momentum": 0.8, "variant": "yu"}),
    ("DecentLaM", {"momentum": 0.8}),
    ("QGDmSGD", {"momentum": 0.8}),
    ("D2", {}),
    ("LocalSGD", {"momentum": 0.8, "period": 3}),
    ("LocalSGD", {"momentum": 0.8, "period": 4, "momentum_averaging": False}),
    ("PmSGD", {"momentum": 0.8}),
]
