"""AD-PSGD's active/passive roles: the 2-colouring of a static topology's undirected graph
(networkx, no MPI). Graph analysis of a :class:`mpidec.topology.Topology`; the figures of
its matrix are in :mod:`mpidec.spectral`."""

from __future__ import annotations

import networkx as nx

from .topology import Topology, TopologyError


def bipartite_roles(topology, rank: int) -> tuple[bool, list[int]]:
    """(is ``rank`` active, its neighbours): the 2-colouring of the topology's undirected
    graph, for AD-PSGD's active/passive split (:class:`mpidec.optim.ADPSGD`).

    ``i`` and ``j`` are neighbours when either receives from the other. Rank 0's colour is
    active; all ranks compute the same colouring.
    """
    if not isinstance(topology, Topology):
        raise TopologyError(f"AD-PSGD picks its own random neighbour every step: give a static topology, "
                            f"not the schedule {topology.name!r}")
    if topology.n < 2:
        raise TopologyError("AD-PSGD needs at least 2 workers to average between")
    graph = nx.Graph()
    graph.add_nodes_from(range(topology.n))
    graph.add_edges_from(topology.edges())
    if not nx.is_bipartite(graph):
        raise TopologyError(
            f"AD-PSGD's active/passive scheme needs a bipartite graph, but topology {topology.name!r} "
            f"(n={topology.n}) has an odd cycle: use a ring with an even number of workers, a hypercube "
            "or a torus with even sides")
    colour = nx.bipartite.color(graph)
    return colour[rank] == colour[0], sorted(graph.neighbors(rank))
