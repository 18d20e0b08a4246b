"""matplotlib, set up once for files (the Agg backend: no display needed), and the figure of a
topology (``mpidec topology --plot``). Every figure of the project, the benchmarks' included,
gets pyplot from :func:`pyplot` and is written with :func:`save`."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx

from .atomic import save_figure


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically (:func:`mpidec.atomic.save_figure`), and
    free it; returns the path."""
    path = save_figure(fig, path)
    pyplot().close(fig)
    return path


def plot_topology(topo, path, steps: int = 4):
    """Draw the graph of a topology on a circle (one panel per step of a schedule)."""
    plt = pyplot()
    count = 1 if topo.period == 1 else min(steps, topo.period or steps)
    fig, axes = plt.subplots(1, count, figsize=(4 * count, 4), squeeze=False)
    for step, ax in enumerate(axes[0]):
        static = topo.at(step)
        graph = nx.DiGraph()
        graph.add_nodes_from(range(static.n))
        graph.add_edges_from(static.edges())
        pos = {i: (math.cos(2 * math.pi * i / static.n), math.sin(2 * math.pi * i / static.n)) for i in range(static.n)}
        nx.draw_networkx(graph, pos, ax=ax, node_size=250, font_size=8, arrows=True, arrowsize=8,
                         node_color="#8ecae6", connectionstyle="arc3,rad=0.08")
        ax.set_title(static.name)
        ax.set_axis_off()
    return save(fig, path)
