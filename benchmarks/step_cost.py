"""Cost of one ``step()`` and memory of each optimizer, for a ResNet-18-sized parameter set.

    mpiexec -n 4 python benchmarks/step_cost.py

The parameters have the shapes of torchvision's resnet18 (11.7 M float32, 46.8 MB);
gradients are random, so the figure is the optimizer alone (local update and
communication), not forward and backward. Baseline, same run: ``torch.optim.SGD``
(momentum 0.9) plus the raw exchange of the same bytes (mpi4py Isend/Irecv to both ring
neighbours and a one-pass combine of what arrived, as benchmarks/comm.py's raw baseline),
timed interleaved with each algorithm (ratios within a repetition, see
benchmarks/timing.py). The baseline sends what the algorithm must send: one model to
each ring neighbour, two for the algorithms that gossip model and momentum (``yu``) or
model and tracker (GT), a raw MPI allreduce of one model for PmSGD and of two every
``period`` steps for LocalSGD (timed over ``period`` steps). Every method runs on a ring
over the world. Memory: the optimizer's tensors (state, flat fields, scratch) and the
communicator's exchange buffers, as multiples of the model size.

``passes`` (per row): passes over model-sized memory per step, outside the transport,
counted by construction from the code (one per model-sized array an operation reads or
writes; the transport's own copies are the same for the algorithm and its baseline and
are not counted): :data:`PASSES` says how each number is made up.

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
from common import add_output_flags, finish, save, subplots
from mpidec import optim, topology
from mpidec.comm import MPICommunicator
from timing import timed_together

CASES = [("DSGD", {"momentum": 0.0}), ("DmSGD", {}), ("DmSGD", {"variant": "yu"}), ("DecentLaM", {}),
         ("QGDmSGD", {}), ("D2", {"momentum": 0.0}), ("GT", {}), ("LocalSGD", {"period": 4}), ("PmSGD", {})]

# what the baseline sends per timed call: (ring messages of one model, allreduced models, steps per call)
SENDS = {"DmSGD variant=yu": (2, 0, 1), "GT": (2, 0, 1), "LocalSGD period=4": (0, 2, 4), "PmSGD": (0, 1, 1)}

# Passes over model-sized memory per step outside the transport (with measure_consensus, the
# default; "combine + measure" = the residual r = (1 - w0) x - R^T w into a scratch (reads x and
# the 2 received rows, writes r: 4), its norm (1) and x -= r (3), which is the combine w0 x + R^T w:
# 8; the combine alone, in place, is 4 (the baseline's, and the state gossiped along with the
# model, which is not measured); SGD's momentum step m = beta m + g (mul_, add_: 5) and
# x -= lr m (3) = 8, as torch.optim.SGD does it).
PASSES = {
    "SGD + raw exchange": ("14 / 18", "SGD 8 + packing the parameters into one message 2 + combine 4 per message"),
    "DSGD": ("11", "x -= lr g 3 + combine + measure 8"),
    "DmSGD": ("16", "SGD 8 + combine + measure 8"),
    "DmSGD variant=yu": ("20", "SGD 8 + model: combine + measure 8 + momentum: combine 4"),
    "DecentLaM": ("24", "copy x 2 + x -= lr g 3 + combine + measure 8 + x - WS 3 + x -= lr beta m 3 + m update 5"),
    "QGDmSGD": ("24", "copy x 2 + x -= lr g 3 + x -= lr beta m 3 + combine + measure 8 + x - x+ 3 + m update 5"),
    "D2": ("21", "lerp(x_prev, x, 2) 3 + x_prev <- x 2 + x <- . + lr g_prev 3 + x -= lr g 3 + g_prev <- g 2"
                 " + combine + measure 8"),
    "GT": ("28", "y += g - g_prev 6 + g_prev <- g 2 + SGD 8 + model: combine + measure 8 + tracker: combine 4"),
    "LocalSGD period=4": ("9", "SGD 8; every 4th step model and momentum allreduced in place (no pack), divided: 2 x 2 / 4"),
    "PmSGD": ("14", "pack the gradients 2 + divide 2 + unpack 2 + SGD 8"),
}


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def optimizer_bytes(opt) -> int:
    """State (momentum, previous iterates, ...) plus scratch kept between steps: the storages of
    the state tensors, of the flat fields (mpidec/optim/flat.py) and of scratch dicts, each once."""
    tensors = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    tensors += [t for d in vars(opt).values() if isinstance(d, dict) for t in d.values() if torch.is_tensor(t)]
    layout = getattr(opt, "_layout", None)
    if layout is not None:
        tensors += [b for field in layout._fields.values() for b in field.values()]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


RING_WEIGHTS = torch.tensor([1 / 3, 1 / 3])  # the ring's neighbour weights (self weight 1/3)


def sgd_plus_raw_exchange(world, params, sgd, recv, sends):
    """``steps`` torch SGD steps, ``messages`` models packed and sent to both ring neighbours
    (Isend/Irecv) and each combined in one pass (``x <- w0 x + recv^T w``: the least a gossip
    round must do with what it receives), ``allreduced`` models packed and allreduced (MPI,
    in place)."""
    from mpi4py import MPI

    messages, allreduced, steps = sends
    for _ in range(steps):
        sgd.step()
    n, r = world.Get_size(), world.Get_rank()
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    for _ in range(messages):
        reqs = [world.Irecv(recv[0].numpy(), source=(r - 1) % n), world.Irecv(recv[1].numpy(), source=(r + 1) % n),
                world.Isend(flat.numpy(), dest=(r - 1) % n), world.Isend(flat.numpy(), dest=(r + 1) % n)]
        MPI.Request.Waitall(reqs)
        torch.addmv(flat, recv.t(), RING_WEIGHTS, beta=1 / 3, out=flat)
    for _ in range(allreduced):
        world.Allreduce(MPI.IN_PLACE, flat.numpy())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--overlap-reps", type=int, default=7, help="repetitions of the whole-iteration timing")
    parser.add_argument("--batch", type=int, default=4, help="images per rank in the whole-iteration timing")
    add_output_flags(parser, "step_cost")
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
    rows = [{"algorithm": "SGD + raw exchange", "ratio": 1.0, "passes": PASSES["SGD + raw exchange"][0],
             "passes_counted": PASSES["SGD + raw exchange"][1],
             "buffers_x_model": (tensor_bytes([recv]) + model_bytes) / model_bytes}]  # recv + the packed copy
    for name, kwargs in CASES:
        comm = MPICommunicator()
        kwargs = {"momentum": 0.9, **kwargs}
        opt = optim.by_name(name)(fresh(), lr=0.01, topology=ring, comm=comm, overlap=False, **kwargs)
        label = name + "".join(f" {k}={v}" for k, v in kwargs.items() if k != "momentum")
        sends = SENDS.get(label, (1, 0, 1))
        baseline = lambda: sgd_plus_raw_exchange(world, base_params, sgd, recv, sends)  # noqa: E731
        steps = lambda: [opt.step() for _ in range(sends[2])]  # noqa: E731
        times = timed_together(world, {"baseline": baseline, name: steps}, args.reps, baseline="baseline")
        rows[0].setdefault("state_x_model", optimizer_bytes(sgd) / model_bytes)  # after SGD's first step
        rows.append({"algorithm": label, "seconds": times[name][0] / sends[2],
                     "baseline_seconds": times["baseline"][0] / sends[2], "baseline_sends": sends,
                     "ratio": times[name][1], "passes": PASSES[label][0], "passes_counted": PASSES[label][1],
                     "state_x_model": optimizer_bytes(opt) / model_bytes,
                     "buffers_x_model": comm._pool.allocated_bytes / model_bytes})
        del opt
        if world.Get_rank() == 0:
            r = rows[-1]
            print(f"{label:22s} {r['seconds'] * 1e3:8.1f} ms  x{r['ratio']:.2f} of SGD+raw ({r['baseline_seconds'] * 1e3:.1f} ms)"
                  f"  passes {r['passes']} (SGD+raw: 14, 18 for two models)"
                  f"  state {r['state_x_model']:.1f}x  buffers {r['buffers_x_model']:.1f}x model", flush=True)
    overlap_rows = overlap_cost(world, ring, args)
    if world.Get_rank() == 0:
        finish(args, {"ranks": world.Get_size(), "model_bytes": model_bytes, "reps": args.reps,
                      "rows": rows, "overlap": overlap_rows}, plot)


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


def plot(results, path):
    rows = results["rows"]
    fig, ax = subplots(figsize=(8, 3.8))
    ax.barh([r["algorithm"] for r in rows][::-1], [r["ratio"] for r in rows][::-1], color="#219ebc")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("time per step / (torch SGD step + raw ring exchange)")
    ax.set_title("step cost, ResNet-18-sized parameters, 4 ranks")
    save(fig, path)


if __name__ == "__main__":
    main()
