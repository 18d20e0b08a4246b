"""Cost of one ``step()`` and memory of each optimizer, for a ResNet-18-sized parameter set.

    mpiexec -n 4 python benchmarks/step_cost.py

The parameters have the shapes of torchvision's resnet18 (11.7 M float32, 46.8 MB);
gradients are random, so the figure is the optimizer alone (local update and
communication), not forward and backward. Baseline, same run: ``torch.optim.SGD``
(momentum 0.9) plus the raw exchange of the same bytes (mpi4py Isend/Irecv to both ring
neighbours), timed interleaved with each algorithm (ratios within a repetition, see
benchmarks/timing.py). Every method runs on a ring over the world. Memory: the optimizer's
tensors (state and scratch) and the communicator's exchange buffers, as multiples of
the model size.

Second part, the cost of correctness: a whole iteration (zero_grad, forward and backward
of torchvision's resnet18 on a small batch, ``step()``) with the default ``overlap=True``
and ``bucket_bytes`` (PmSGD averages its gradients from hooks during backward; the others
pipeline their buckets inside ``step()``) against ``overlap=False`` with one bucket, timed
interleaved, each on its own copy of the model. Writes benchmarks/results/step_cost.json
and docs/figures/step_cost.png.
"""

from __future__ import annotations

import argparse

import torch
import torchvision

import mpidec
from mpidec import optim, topology
from mpidec.atomic import save_figure, write_json
from mpidec.comm import MPICommunicator
from timing import timed_together

CASES = [("DSGD", {"momentum": 0.0}), ("DmSGD", {}), ("DmSGD", {"variant": "yu"}), ("DecentLaM", {}),
         ("QGDmSGD", {}), ("D2", {"momentum": 0.0}), ("LocalSGD", {"period": 4}), ("PmSGD", {})]


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def optimizer_bytes(opt) -> int:
    """State (momentum, previous iterates, ...) plus scratch buffers kept between steps."""
    state = [t for s in opt.state.values() for t in s.values()]
    scratch = [t for d in vars(opt).values() if isinstance(d, dict) for t in d.values()]
    return tensor_bytes(state) + tensor_bytes(scratch)


def sgd_plus_raw_exchange(world, params, sgd, recv):
    from mpi4py import MPI

    sgd.step()
    n, r = world.Get_size(), world.Get_rank()
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    reqs = [world.Irecv(recv[0].numpy(), source=(r - 1) % n), world.Irecv(recv[1].numpy(), source=(r + 1) % n),
            world.Isend(flat.numpy(), dest=(r - 1) % n), world.Isend(flat.numpy(), dest=(r + 1) % n)]
    MPI.Request.Waitall(reqs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--overlap-reps", type=int, default=7, help="repetitions of the whole-iteration timing")
    parser.add_argument("--batch", type=int, default=4, help="images per rank in the whole-iteration timing")
    parser.add_argument("--out", default="benchmarks/results/step_cost.json")
    parser.add_argument("--plot", default="docs/figures/step_cost.png")
    args = parser.parse_args()
    world = mpidec.init()
    shapes = [p.shape for p in torchvision.models.resnet18().parameters()]
    model_bytes = sum(s.numel() for s in shapes) * 4
    ring = topology.ring(world.Get_size())

    def fresh():
        g = torch.Generator().manual_seed(world.Get_rank())
        params = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * 1e-3
        return params

    base_params = fresh()
    sgd = torch.optim.SGD(base_params, lr=0.01, momentum=0.9)
    recv = torch.empty(2, model_bytes // 4)
    baseline = lambda: sgd_plus_raw_exchange(world, base_params, sgd, recv)  # noqa: E731
    rows = [{"algorithm": "SGD + raw exchange", "ratio": 1.0,
             "buffers_x_model": (tensor_bytes([recv]) + model_bytes) / model_bytes}]  # recv + the packed copy
    for name, kwargs in CASES:
        comm = MPICommunicator()
        kwargs = {"momentum": 0.9, **kwargs}
        opt = optim.by_name(name)(fresh(), lr=0.01, topology=ring, comm=comm, overlap=False, **kwargs)
        times = timed_together(world, {"baseline": baseline, name: opt.step}, args.reps, baseline="baseline")
        label = name + "".join(f" {k}={v}" for k, v in kwargs.items() if k != "momentum")
        rows[0].setdefault("seconds", times["baseline"][0])
        rows[0].setdefault("state_x_model", optimizer_bytes(sgd) / model_bytes)  # after SGD's first step
        rows.append({"algorithm": label, "seconds": times[name][0], "baseline_seconds": times["baseline"][0],
                     "ratio": times[name][1], "state_x_model": optimizer_bytes(opt) / model_bytes,
                     "buffers_x_model": comm._pool.allocated_bytes / model_bytes})
        del opt
        if world.Get_rank() == 0:
            r = rows[-1]
            print(f"{label:22s} {r['seconds'] * 1e3:8.1f} ms  x{r['ratio']:.2f} of SGD+raw ({r['baseline_seconds'] * 1e3:.1f} ms)"
                  f"  state {r['state_x_model']:.1f}x  buffers {r['buffers_x_model']:.1f}x model", flush=True)
    overlap_rows = overlap_cost(world, ring, args)
    if world.Get_rank() == 0:
        write_json(args.out, {"ranks": world.Get_size(), "model_bytes": model_bytes, "reps": args.reps,
                              "rows": rows, "overlap": overlap_rows})
        plot(rows, args.plot)
        print(f"wrote {args.out} and {args.plot}")


def overlap_cost(world, ring, args) -> list:
    """Whole iterations with overlap (default buckets) and without (one bucket): the ratio."""
    rows = []
    for name, kwargs in CASES:
        kwargs = {"momentum": 0.9, **kwargs}
        runs = {}
        for overlap in (True, False):
            torch.manual_seed(0)
            model = torchvision.models.resnet18(num_classes=10)
            extra = {} if overlap else {"bucket_bytes": float("inf")}
            opt = optim.by_name(name)(model.parameters(), lr=0.01, topology=ring, comm=MPICommunicator(),
                                      overlap=overlap, **extra, **kwargs)
            g = torch.Generator().manual_seed(world.Get_rank())
            x, y = torch.randn(args.batch, 3, 32, 32, generator=g), torch.randint(0, 10, (args.batch,), generator=g)
            runs["overlap" if overlap else "plain"] = _iteration(model, opt, x, y)
        times = timed_together(world, runs, args.overlap_reps, baseline="plain")
        label = name + "".join(f" {k}={v}" for k, v in kwargs.items() if k != "momentum")
        rows.append({"algorithm": label, "overlap_seconds": times["overlap"][0], "plain_seconds": times["plain"][0],
                     "overlap_ratio": times["overlap"][1]})
        if world.Get_rank() == 0:
            r = rows[-1]
            print(f"{label:22s} iteration {r['overlap_seconds'] * 1e3:8.1f} ms with overlap, "
                  f"{r['plain_seconds'] * 1e3:8.1f} ms without: x{r['overlap_ratio']:.2f}", flush=True)
    return rows


def _iteration(model, opt, x, y):
    def run():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return run


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.barh([r["algorithm"] for r in rows][::-1], [r["ratio"] for r in rows][::-1], color="#219ebc")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("time per step / (torch SGD step + raw ring exchange)")
    ax.set_title("step cost, ResNet-18-sized parameters, 4 ranks")
    save_figure(fig, path)


if __name__ == "__main__":
    main()
