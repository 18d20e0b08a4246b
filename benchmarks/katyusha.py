"""Katyusha X vs SVRG on a sum of non-convex quadratics: gradients to 1e-8 over kappa, and ranks.

    python benchmarks/katyusha.py                                        (kappa sweep, ||E_i|| <= 1)
    python benchmarks/katyusha.py --spread 16 --kappas 170 540 1700 5400 (strongly non-convex E_i)
    mpiexec -n 4 python benchmarks/katyusha.py --ranks                   (1, 2 and 4 ranks)

Problem (the paper's setting): f(x) = (1/n) sum_i 1/2 x^T A_i x + b_i^T x with A_i = mean + E_i,
the E_i symmetric, zero-mean and of norm at most ``spread`` (every A_i indefinite), the mean
positive definite with spectrum from sigma to 1; kappa = L / sigma with L = max_i ||A_i||.
Mini-batches of b = sqrt(n) terms, epoch length m = n / b (one pass), so an epoch costs 3n
gradient evaluations (n at the snapshot, 2 b m inside) for both methods.

Sweep: for each kappa, each method runs on a grid of learning rates lr = 2^(-j/2) / L and keeps
the best (from the largest lr down, until one is slower); Katyusha X takes the paper's
tau = sqrt(m lr sigma) / 2 (capped at 1). Recorded: gradient evaluations until the relative
error (f(y_k) - f*) / (f(x_0) - f*) <= 1e-8, the measured speed-up SVRG / Katyusha X, and the
paper's prediction, the ratio of the complexity bounds (n + sqrt(n) kappa) / (n + n^(3/4)
sqrt(kappa)) (constants dropped), which grows like sqrt(kappa / sqrt(n)) once kappa > sqrt(n).

Ranks: the same Katyusha X run (fixed epochs) on 1, 2 and 4 MPI ranks (sub-communicators of
the world), each rank holding n/p terms and b/p of every batch: the final iterates must
agree to rounding, and the time per epoch (slowest rank, median over repetitions) is recorded.
Results merge into benchmarks/results/katyusha.json; the plot is docs/figures/katyusha.png.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from common import add_output_flags, finish, previous, save, subplots
from mpidec.optim import SVRG, KatyushaX

TARGET = 1e-8


class Quadratics:
    """The sum of non-convex quadratics: the mean's spectrum from sigma to 1 (geometric), the
    zero-mean non-convex parts E_i = A_i - mean of norm at most ``spread``, sigma = L / kappa."""

    def __init__(self, n: int, dim: int, kappa: float, spread: float = 1.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        e = rng.standard_normal((n, dim, dim))
        e = (e + e.transpose(0, 2, 1)) / 2
        e -= e.mean(0)
        e *= spread / np.linalg.norm(e, ord=2, axis=(1, 2)).max()
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.b = rng.standard_normal((n, dim))
        self.n, self.dim = n, dim
        self.L = 1.0 + spread
        for _ in range(2):                                       # sigma = L / kappa, L from the last pass
            if self.L / kappa >= 1.0:
                raise ValueError(f"--kappas: kappa {kappa} is below L = {self.L:.1f} (the mean's top eigenvalue is 1)")
            self.mean = q @ np.diag(np.geomspace(self.L / kappa, 1.0, dim)) @ q.T
            self.A = self.mean + e
            self.L = float(np.linalg.norm(self.A, ord=2, axis=(1, 2)).max())
        self.sigma = float(np.linalg.eigvalsh(self.mean).min())
        self.kappa = self.L / self.sigma
        self.x_star = np.linalg.solve(self.mean, -self.b.mean(0))
        self.x0 = np.zeros(dim)
        self._A, self._b = torch.from_numpy(self.A), torch.from_numpy(self.b)

    def relative_error(self, x) -> float:
        """(f(x) - f*) / (f(x_0) - f*), as the quadratic form around x* (no cancellation)."""
        gap = lambda v: 0.5 * (v - self.x_star) @ self.mean @ (v - self.x_star)  # noqa: E731
        return float(gap(x) / gap(self.x0))

    def closure(self, x, idx):
        A, b = self._A[idx], self._b[idx]

        def closure():
            loss = (0.5 * ((A @ x) @ x) + b @ x).mean()
            loss.backward()
            return loss

        return closure


def make(algorithm, x, lr, m, sigma, comm):
    if algorithm == "SVRG":
        return SVRG([x], lr=lr, epoch_length=m, comm=comm)
    return KatyushaX([x], lr=lr, epoch_length=m, tau=min(1.0, np.sqrt(m * lr * sigma) / 2), comm=comm)


def epochs_to_target(problem, algorithm, lr, batch, max_epochs, comm, seed=0):
    """Epochs until the epoch output reaches TARGET (None: not within max_epochs, or diverged)."""
    m = problem.n // batch
    x = torch.tensor(problem.x0, requires_grad=True)
    opt = make(algorithm, x, lr, m, problem.sigma, comm)
    full = problem.closure(x, torch.arange(problem.n))
    g = torch.Generator().manual_seed(seed)
    for epoch in range(1, max_epochs + 1):
        for idx in torch.randint(0, problem.n, (m, batch), generator=g):
            opt.step(problem.closure(x, idx), full_closure=full)
        err = problem.relative_error(x.detach().numpy())
        if err <= TARGET:
            return epoch
        if not err < 1e6:
            return None
    return None


def best_over_lr(problem, algorithm, batch, max_epochs, comm, lr_exponents):
    """The fewest epochs over lr = 2^(-j/2) / L, j ascending: each run is capped by the best so far,
    and the search stops at the first lr that does not improve on it (past the best lr)."""
    best = (None, None)
    for j in lr_exponents:
        lr = 2.0 ** (-j / 2) / problem.L
        epochs = epochs_to_target(problem, algorithm, lr, batch, best[0] or max_epochs, comm)
        if epochs is not None and (best[0] is None or epochs < best[0]):
            best = (epochs, lr)
        elif best[0] is not None:
            break
    return best


def sweep_row(problem, batch, comm, args) -> dict:
    """Both methods at their best lr on one problem; the measured and the predicted speed-up."""
    n, m, t0 = problem.n, problem.n // batch, time.perf_counter()
    row = {"kappa": problem.kappa, "mean_condition": float(np.linalg.cond(problem.mean)), "sigma": problem.sigma,
           "L": problem.L}
    for algorithm in ("SVRG", "KatyushaX"):
        epochs, lr = best_over_lr(problem, algorithm, batch, args.max_epochs, comm, args.lr_exponents)
        row[algorithm] = {"epochs": epochs, "lr": lr, "gradients": None if epochs is None else 3 * n * epochs}
        if algorithm == "KatyushaX" and lr is not None:
            row[algorithm]["tau"] = min(1.0, np.sqrt(m * lr * problem.sigma) / 2)
    k = problem.kappa
    row["predicted_speedup"] = (n + np.sqrt(n) * k) / (n + n ** 0.75 * np.sqrt(k))
    if row["SVRG"]["epochs"] and row["KatyushaX"]["epochs"]:
        row["measured_speedup"] = row["SVRG"]["epochs"] / row["KatyushaX"]["epochs"]
    row["seconds"] = time.perf_counter() - t0
    print(f"spread {args.spread:g} kappa {k:9.1f}  SVRG {row['SVRG']['gradients']} grads (lr {row['SVRG']['lr']})  "
          f"KatyushaX {row['KatyushaX']['gradients']} grads (lr {row['KatyushaX']['lr']})  "
          f"speed-up {row.get('measured_speedup')}  predicted {row['predicted_speedup']:.2f}  "
          f"({row['seconds']:.0f} s)", flush=True)
    return row


def sweep(args):
    from mpidec.comm import Simulator

    comm = Simulator(1).comms[0]
    batch = int(round(np.sqrt(args.n)))
    rows = [sweep_row(Quadratics(args.n, args.dim, kappa, args.spread, args.seed), batch, comm, args)
            for kappa in args.kappas]
    return {"target": TARGET, "gradients_per_epoch": "3 n", "n": args.n, "dim": args.dim, "batch": batch,
            "epoch_length": args.n // batch, "spread": args.spread, "seed": args.seed,
            "lr_grid": f"2^(-j/2) / L, j = {args.lr_exponents[0]}, {args.lr_exponents[1]}, ...",
            **slopes(rows, args.n), "rows": rows}


def slopes(rows, n) -> dict:
    """Log-log slopes in kappa over the rows with kappa > sqrt(n), where the bounds' kappa terms
    dominate: gradients ~ kappa^1 (SVRG) and kappa^0.5 (Katyusha X), speed-up ~ kappa^0.5."""
    def slope(key):
        points = [(r["kappa"], key(r)) for r in rows if r["kappa"] > np.sqrt(n) and key(r)]
        return float(np.polyfit(*np.log(np.array(points)).T, 1)[0]) if len(points) > 1 else None

    return {"slope_in_kappa": {"SVRG": slope(lambda r: r["SVRG"]["gradients"]),
                               "KatyushaX": slope(lambda r: r["KatyushaX"]["gradients"]),
                               "speedup": slope(lambda r: r.get("measured_speedup")),
                               "predicted_speedup": slope(lambda r: r["predicted_speedup"])}}


def _idle_until(request):
    """Wait for a non-blocking barrier without spinning (ranks left out of a run yield the CPU)."""
    while not request.Test():
        time.sleep(0.005)


def _timed_run(problem, sub, table, lr, m, epochs, reps):
    """This rank's part of the run on ``sub`` (its shard, its columns): final x, median s per epoch."""
    from mpi4py import MPI

    from mpidec.comm import MPICommunicator

    p, rank, n, batch = sub.Get_size(), sub.Get_rank(), problem.n, table.shape[1]
    comm = MPICommunicator(comm=sub, allreduce="mpi")  # Horovod serves one communicator per process
    shard = torch.arange(rank * n // p, (rank + 1) * n // p)
    mine = torch.as_tensor(table[:, rank * batch // p:(rank + 1) * batch // p])
    times = []
    for _ in range(reps):
        x = torch.tensor(problem.x0, requires_grad=True)
        opt = make("KatyushaX", x, lr, m, problem.sigma, comm)
        full = problem.closure(x, shard)
        sub.Barrier()
        t0 = time.perf_counter()
        for idx in mine:
            opt.step(problem.closure(x, idx), full_closure=full)
        times.append(sub.allreduce(time.perf_counter() - t0, op=MPI.MAX) / epochs)
    return x.detach().numpy().copy(), statistics.median(times)


def ranks(args):
    """Katyusha X on 1, 2 and 4 ranks with the same total batch: final iterates and time per epoch."""
    import mpidec

    world = mpidec.init()
    rank, size = world.Get_rank(), world.Get_size()
    problem = Quadratics(args.n, args.ranks_dim, args.ranks_kappa, args.spread, args.seed)
    batch = int(round(np.sqrt(args.n)))
    m, per = args.n // batch, args.n // size
    owner = np.repeat(np.arange(size), batch // size)     # column c is drawn from shard owner[c] of `size`
    table = owner * per + np.random.default_rng(1).integers(0, per, size=(args.ranks_epochs * m, batch))
    lr = 0.5 / problem.L
    rows, finals = [], {}
    for p in [q for q in (1, 2, 4) if q <= size and size % q == 0]:
        sub = world.Split(0 if rank < p else 1, rank)
        if rank < p:
            final, seconds = _timed_run(problem, sub, table, lr, m, args.ranks_epochs, args.reps)
            if rank == 0:
                finals[p] = final
                rows.append({"ranks": p, "batch_per_rank": batch // p, "seconds_per_epoch": seconds,
                             "relative_error": problem.relative_error(final)})
                print(f"{p} ranks ({batch // p} terms each per step): {seconds * 1e3:.1f} ms per epoch, "
                      f"relative error {rows[-1]['relative_error']:.2e}", flush=True)
        sub.Free()
        _idle_until(world.Ibarrier())
    if rank != 0:
        return None
    for row in rows:
        diff = finals[row["ranks"]] - finals[1]
        row["max_abs_diff_vs_1_rank"] = float(np.abs(diff).max())
        row["relative_diff_vs_1_rank"] = float(np.linalg.norm(diff) / np.linalg.norm(finals[1]))
        row["time_ratio_vs_1_rank"] = row["seconds_per_epoch"] / rows[0]["seconds_per_epoch"]
    return {"kappa": problem.kappa, "n": args.n, "dim": args.ranks_dim, "total_batch": batch, "epoch_length": m,
            "epochs": args.ranks_epochs, "lr": lr, "reps": args.reps, "world_size": size, "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", action="store_true", help="the 1/2/4-rank part (run under mpiexec -n 4)")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--dim", type=int, default=40)
    parser.add_argument("--kappas", type=float, nargs="+", default=[16, 50, 160, 500, 1600])
    parser.add_argument("--spread", type=float, default=1.0,
                        help="max ||A_i - mean||; the mean's spectrum is [sigma, 1]")
    parser.add_argument("--lr-exponents", type=int, nargs="+", default=list(range(-4, 16)), help="lr = 2^(-j/2) / L")
    parser.add_argument("--max-epochs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranks-dim", type=int, default=160)
    parser.add_argument("--ranks-kappa", type=float, default=200)
    parser.add_argument("--ranks-epochs", type=int, default=20)
    parser.add_argument("--reps", type=int, default=5)
    add_output_flags(parser, "katyusha")
    args = parser.parse_args()

    part = ranks(args) if args.ranks else sweep(args)
    if part is None:
        return
    results = previous(args.out)
    if args.ranks:
        results["ranks"] = part
    else:
        results.setdefault("sweeps", {})[f"spread {args.spread:g}"] = part
    finish(args, results, plot)


def plot(results, path):
    fig, axes = subplots(1, 3, figsize=(15, 4))
    for label, part in results.get("sweeps", {}).items():
        rows = part["rows"]
        kappas = [r["kappa"] for r in rows]
        for algorithm, style in (("SVRG", "o--"), ("KatyushaX", "o-")):
            axes[0].loglog(kappas, [r[algorithm]["gradients"] or np.nan for r in rows], style,
                           label=f"{algorithm}, {label}")
        axes[1].loglog(kappas, [r.get("measured_speedup", np.nan) for r in rows], "o-", label=f"measured, {label}")
        axes[1].loglog(kappas, [r["predicted_speedup"] for r in rows], ":", color="gray")
    axes[1].plot([], [], ":", color="gray", label="(n + sqrt(n) k) / (n + n^3/4 sqrt(k))")
    axes[0].set_xlabel("kappa = L / sigma")
    axes[0].set_ylabel(f"gradient evaluations to {TARGET:g}")
    axes[0].set_title("best learning rate per method")
    axes[1].set_xlabel("kappa = L / sigma")
    axes[1].set_ylabel("SVRG / Katyusha X gradients")
    axes[1].set_title("speed-up")
    ranks_rows = results.get("ranks", {}).get("rows", [])
    if ranks_rows:
        axes[2].bar([str(r["ranks"]) for r in ranks_rows], [r["seconds_per_epoch"] * 1e3 for r in ranks_rows])
        axes[2].set_xlabel("ranks (same total batch, equal iterates)")
        axes[2].set_ylabel("ms per epoch (slowest rank)")
        axes[2].set_title("Katyusha X, data-parallel")
    for ax in axes[:2]:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    save(fig, path)


if __name__ == "__main__":
    main()
