"""Figures of training runs from their metrics records (PNG, written atomically)."""

from __future__ import annotations

from ..figures import pyplot, save


def _series(records, event: str, x: str, y: str):
    """The ``(x, y)`` values of the ``event`` records that have ``y`` (None: not measured)."""
    rows = [r for r in records if r["event"] == event and r.get(y) is not None]
    return [r[x] for r in rows], [r[y] for r in rows]


def plot_curves(runs, path):
    """Training loss, test accuracy (averaged model solid, worker mean dashed) and learning
    rate; ``runs`` is a list of ``(label, records)``."""
    plt = pyplot()
    fig, (loss_ax, acc_ax, lr_ax) = plt.subplots(1, 3, figsize=(16, 4.5), constrained_layout=True)
    for index, (label, records) in enumerate(runs):
        color = f"C{index}"
        loss_ax.plot(*_series(records, "train", "step", "loss"), color=color, label=label)
        acc_ax.plot(*_series(records, "eval", "epoch", "test_accuracy"), color=color, marker=".", label=label)
        acc_ax.plot(*_series(records, "eval", "epoch", "worker_test_accuracy"), color=color, linestyle="--")
        lr_ax.plot(*_series(records, "train", "step", "lr"), color=color, label=label)
    loss_ax.set(xlabel="step", ylabel="training loss", title="training loss (mean over workers)", yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy\n(solid: averaged model, dashed: mean of workers)")
    lr_ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    for ax in (loss_ax, acc_ax, lr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, path)


def plot_consensus(runs, path):
    """Consensus distance over steps, one line per run."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for label, records in runs:
        steps, distances = _series(records, "train", "step", "consensus_distance")
        note = "" if any(distances) else " (0: not on a log scale)" if distances else " (not measured: asynchronous)"
        ax.plot(steps, distances, label=label + note)
    ax.set(xlabel="step", ylabel="sqrt(mean_i ||x_i - xbar||^2)", title="consensus distance")
    measured = [d for _, records in runs for d in _series(records, "train", "step", "consensus_distance")[1]]
    if any(d > 0 for d in measured):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
