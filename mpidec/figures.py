"""Figures people would rather look at than numbers (matplotlib, Agg, atomic PNGs)."""

from __future__ import annotations

import math

import networkx as nx

from .atomic import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_topology(topo, path, steps: int = 4):
    """Draw the graph of a topology on a circle (one panel per step of a schedule)."""
    plt = _pyplot()
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
    return save_figure(fig, path)
