"""Dense-matrix oracles shared by the serial and MPI tests."""

import math
from collections import deque

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


class DenseRule:
    """One algorithm in matrix form (rows = nodes): ``step(X, G, W, lr, beta)`` is one
    iteration on the given gradients; the oracle for every optimizer. ``mask`` (rows x
    coordinates, True where a node has a gradient) gives torch.optim.SGD's rule for missing
    gradients to the momentum-SGD family: no momentum update and no local step there."""

    def __init__(self, algorithm, n, dim, momentum=0.0, variant="atc", period=1, momentum_sync="average", delay=1):
        self.algorithm, self.variant, self.period, self.sync = algorithm, variant, period, momentum_sync
        self.delay, self.in_flight = delay, deque()  # OSGP: its pushes, received delay steps later
        self.M = np.zeros((n, dim))
        self.Xp = self.Gp = None
        self.WY = np.zeros((n, dim))            # GT: the gossiped tracker
        self.numerators, self.w = None, np.ones(n)  # SGP: push-sum numerators and weights
        self.J = np.full((n, n), 1 / n)
        self.t = 0

    def _momentum(self, G, beta, mask):
        M = np.where(mask, beta * self.M + G, self.M)
        self.M = M
        return np.where(mask, M, 0.0)

    def step(self, X, G, W, lr, beta, mask=None):
        a, t, J = self.algorithm, self.t, self.J
        mask = np.ones_like(X, dtype=bool) if mask is None else mask
        if a in ("DSGD", "DmSGD") and self.variant == "atc":
            X = W @ (X - lr * self._momentum(G, beta, mask))
        elif a == "DmSGD":
            Y = beta * self.M + G
            self.M, X = W @ Y, W @ (X - lr * Y)
        elif a == "DecentLaM":
            Ghat = (X - W @ (X - lr * np.where(mask, G, 0.0))) / lr
            self.M = beta * self.M + Ghat
            X = X - lr * self.M
        elif a == "QGDmSGD":
            Xn = W @ (X - lr * (G + beta * self.M))
            self.M = beta * self.M + (1 - beta) * (X - Xn) / lr
            X = Xn
        elif a == "D2":
            H = X - lr * G if t == 0 else 2 * X - self.Xp - lr * (G - self.Gp)
            self.Xp, self.Gp, X = X, G, W @ H
        elif a == "LocalSGD":
            X = X - lr * self._momentum(G, beta, mask)
            if (t + 1) % self.period == 0:
                X, self.M = J @ X, {"average": J @ self.M, "clear": 0 * self.M, "local": self.M}[self.sync]
        elif a == "PmSGD":
            X = X - lr * self._momentum(J @ G, beta, mask)
        elif a == "GT":
            Y = self.WY + G - (self.Gp if self.Gp is not None else 0.0)
            D = self._momentum(Y, beta, mask)
            X, self.WY, self.Gp = W @ (X - lr * D), W @ Y, G
        elif a in ("SGP", "OSGP"):  # X is the de-biased model Z = numerators / w
            numerators = X * self.w[:, None] if self.numerators is None else self.numerators
            H = numerators - lr * self._momentum(G, beta, mask)
            if a == "SGP":
                self.numerators, self.w = W @ H, W @ self.w
            else:  # keep diag(W) of H and w, push the rest
                keep, pushes = np.diag(W), W - np.diag(np.diag(W))
                self.in_flight.append((pushes @ H, pushes @ self.w))
                self.numerators, self.w = keep[:, None] * H, keep * self.w
                if len(self.in_flight) > self.delay:
                    pushed, pushed_w = self.in_flight.popleft()
                    self.numerators, self.w = self.numerators + pushed, self.w + pushed_w
            X = self.numerators / self.w[:, None]
        elif a == "SignumMV":
            self.M = beta * self.M + G if beta else G
            ones = (self.M >= 0).sum(axis=0) * 2
            positions = np.arange(X.shape[1])
            vote = np.where((ones > X.shape[0]) | ((ones == X.shape[0]) & (positions % 2 == 0)), 1.0, -1.0)
            X = X - lr * vote
        else:
            raise ValueError(a)
        self.t += 1
        return X


def dense_trajectory(problem, algorithm, topology, steps, lr, momentum=0.0, **options):
    """``DenseRule`` on the problem's exact gradients; returns (nodes, steps, dim)."""
    rule = DenseRule(algorithm, problem.n, problem.dim, momentum, **options)
    X, out = problem.x0.copy(), []
    for t in range(steps):
        X = rule.step(X, problem.grads(X), topology.at(t).W, lr, momentum)
        out.append(X)
    return np.stack(out, axis=1)


def mlp_worker(comm, algorithm, steps=6, **kwargs):
    """A small MLP, the same initial model on every rank and each rank its own data, trained
    ``steps`` steps; returns (final parameters, number of buckets, [backward averaged the
    gradients, per step])."""
    from mpidec import optim
    from mpidec import topology as T

    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 1)).double()
    init = torch.Generator().manual_seed(0)  # the same initial model everywhere (threads share torch's RNG)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=init, dtype=torch.float64) * 0.5)
    g = torch.Generator().manual_seed(comm.rank)  # ... but each worker its own data
    x, y = torch.randn(32, 5, generator=g, dtype=torch.float64), torch.randn(32, 1, generator=g, dtype=torch.float64)
    opt = optim.by_name(algorithm)(model.parameters(), lr=0.05, topology=T.ring(comm.size), comm=comm, **kwargs)
    averaged = []
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        averaged.append(getattr(opt, "_averaged", False))
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy(), len(opt._buckets), averaged


# name, optimizer kwargs (dense_trajectory takes the same)
ALGORITHM_CASES = [
    ("DSGD", {}),
    ("DmSGD", {"momentum": 0.8}),
    ("DmSGD", {"momentum": 0.8, "variant": "yu"}),
    ("DecentLaM", {"momentum": 0.8}),
    ("QGDmSGD", {"momentum": 0.8}),
    ("D2", {}),
    ("LocalSGD", {"momentum": 0.8, "period": 3}),
    ("LocalSGD", {"momentum": 0.8, "period": 4, "momentum_sync": "clear"}),
    ("LocalSGD", {"momentum": 0.8, "period": 2, "momentum_sync": "local"}),
    ("PmSGD", {"momentum": 0.8}),
]


# ------------------------------------------------------------------ consensus and the vote

def random_models(n, seed, dim=50):
    """Node i's list of tensors is element i (float64)."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(dim, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64)]
            for _ in range(n)]


def xi(models):
    """The exact consensus distance sqrt((1/n) sum_i ||x_i - xbar||^2) of the node models."""
    X = np.stack([np.concatenate([t.numpy().ravel() for t in m]) for m in models])
    return math.sqrt(((X - X.mean(0)) ** 2).sum(1).mean())


def vote_closed_form(signals, offset=0):
    """sign(sum of signs), ties +1 at even positions (from ``offset``) and -1 at odd ones."""
    s = np.sign(np.where(np.stack(signals) >= 0, 1, -1).sum(0))
    ties = s == 0
    s[ties] = np.where((np.arange(len(s)) + offset)[ties] % 2 == 0, 1, -1)
    return s


class WireMatrix:
    """``W`` as a wire in ``dtype`` sees it: ``Y -> diag(W) Y + (W - diag(W)) round(Y)`` (the own
    row exact, the neighbours' rounded to ``dtype``), so that the dense rules of oracles.py,
    which gossip with ``W @ Y``, become the rules with a low-precision wire."""

    def __init__(self, W, dtype):
        self.W, self.dtype, self.d = W, dtype, np.diag(W)

    def __matmul__(self, Y):
        rounded = torch.from_numpy(np.ascontiguousarray(Y)).to(self.dtype).double().numpy()
        return self.d[:, None] * Y + (self.W - np.diag(self.d)) @ rounded


class WireTopology:
    """A topology whose rounds are :class:`WireMatrix`: what the dense rules see with a
    low-precision wire (``dense_trajectory(problem, algorithm, WireTopology(topo, dtype), ...)``)."""

    def __init__(self, topo, dtype):
        self.topo, self.dtype = topo, dtype

    def at(self, step):
        t = self.topo.at(step)
        return type("Round", (), {"W": WireMatrix(t.W, self.dtype)})()



# ------------------------------------------------------------------ runs on the simulator


def simulate(problem, topology, algorithm, steps, **kwargs):
    """``problem.worker`` on the simulator: (nodes, steps, dim) and the optimizers."""
    from mpidec.comm import Simulator

    results = Simulator(problem.n).run(problem.worker, algorithm, steps, topology=topology, **kwargs)
    return np.stack([traj for traj, _ in results]), [opt for _, opt in results]


def resumed_worker(problem, algorithm, topology, first, rest, **kwargs):
    """A worker that trains ``first`` steps, saves the optimizer's state_dict, builds a new
    optimizer on a copy of the model, loads the state and trains ``rest`` more steps."""
    from mpidec import optim

    def worker(comm):
        head, opt = problem.worker(comm, algorithm, first, topology=topology, **kwargs)
        saved = opt.state_dict()
        params = [torch.tensor(head[-1][:4]).requires_grad_(), torch.tensor(head[-1][4:]).requires_grad_()]
        again = optim.by_name(algorithm)(params, topology=topology, comm=comm, **kwargs)
        again.load_state_dict(saved)
        return np.concatenate([head, descend(problem, comm.rank, again, params, rest)])

    return worker


def descend(problem, rank, opt, params, steps):
    """``steps`` steps of an optimizer already built (``opt`` over ``params``: node ``rank``'s
    model in two tensors, as :meth:`LeastSquares.worker` splits it) on node ``rank``'s least
    squares; the model after every step, one row each."""
    A, b = torch.tensor(problem.A[rank]), torch.tensor(problem.b[rank])
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((A @ torch.cat(params) - b) ** 2).sum()).backward()
        opt.step()
        trajectory.append(torch.cat(params).detach().numpy().copy())
    return np.stack(trajectory)


def assert_resume_is_bit_identical(problem, algorithm, topology, first, rest, **kwargs):
    """``first + rest`` steps in one run equal, bit for bit, ``first`` steps, a state_dict
    loaded into a new optimizer, and ``rest`` more (:func:`resumed_worker`)."""
    from mpidec.comm import Simulator

    full, _ = simulate(problem, topology, algorithm, first + rest, **kwargs)
    got = np.stack(Simulator(problem.n).run(resumed_worker(problem, algorithm, topology, first, rest, **kwargs)))
    np.testing.assert_array_equal(got, full)


def count_at_the_transport(comm) -> list:
    """Wrap the communicator's transport primitives with a count of their own (send buffer
    times destinations, an allreduce as a ring's 2 (n - 1) / n); the list's number grows."""
    n, total = comm.size, [0.0]

    def wrap(name, destinations):
        inner = getattr(comm, name)

        def counted(*args):
            send = args[1] if name == "_start_neighbor_allgather" else args[0]
            total[0] += send.numel() * send.element_size() * destinations(*args)
            return inner(*args)

        setattr(comm, name, counted)

    wrap("_start_neighbor_allgather", lambda plan, send, recv: len(plan.destinations))
    wrap("_start_allgather", lambda send, recv: n - 1)
    wrap("_start_alltoall", lambda send, recv: (n - 1) / n)
    wrap("_start_allreduce", lambda buf: 2 * (n - 1) / n)
    return total


def stop_counting(comm) -> None:
    """Remove the wrappers of :func:`count_at_the_transport`."""
    for name in ("_start_neighbor_allgather", "_start_allgather", "_start_alltoall", "_start_allreduce"):
        comm.__dict__.pop(name, None)
