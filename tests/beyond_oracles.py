"""Dense-matrix oracles of issue 19's algorithms (gradient tracking, SGP and OSGP, DiLoCo), rows = nodes,
float64 numpy: the recursions of the optimizers' docstrings, applied to exact gradients."""

from collections import deque

import numpy as np


def momentum_direction(M, G, beta, nesterov):
    """``M <- beta M + G``; the direction ``M`` (heavy ball) or ``G + beta M`` (Nesterov)."""
    M = beta * M + G
    return M, (G + beta * M if nesterov else M)


def gt_trajectory(problem, topology, steps, lr, momentum=0.0, nesterov=False):
    """GT: ``Y = W Y_prev + G - G_prev; M = beta M + Y; X+ = W (X - lr M)``; (nodes, steps, dim)."""
    X = problem.x0.copy()
    WY, Gp, M, out = np.zeros_like(X), np.zeros_like(X), np.zeros_like(X), []
    for t in range(steps):
        W, G = topology.at(t).W, problem.grads(X)
        Y = WY + G - Gp
        M, D = momentum_direction(M, Y, momentum, nesterov)
        X, WY, Gp = W @ (X - lr * D), W @ Y, G
        out.append(X)
    return np.stack(out, axis=1)


def sgp_trajectory(problem, topology, steps, lr, momentum=0.0, nesterov=False, grads=None, delay=0):
    """SGP: numerators ``X``, weights ``w``, de-biased ``Z = X / w``;
    ``M = beta M + G(Z); X+ = P (X - lr M); w+ = P w``. With ``delay`` >= 1, OSGP: node i
    keeps ``D = diag(P)`` of ``H = X - lr M`` and of ``w``, and the pushes ``(P - D) H``,
    ``(P - D) w`` are added ``delay`` steps later. Returns (Z per step, w per step)."""
    grads = grads or problem.grads
    X, w = problem.x0.copy(), np.ones(problem.n)
    M, zs, ws, in_flight = np.zeros_like(X), [], [], deque()
    for t in range(steps):
        P = topology.at(t).W
        M, D = momentum_direction(M, grads(X / w[:, None]), momentum, nesterov)
        if not delay:
            X, w = P @ (X - lr * D), P @ w
        else:
            H, keep = X - lr * D, np.diag(P)
            in_flight.append(((P - np.diag(keep)) @ H, (P - np.diag(keep)) @ w))
            X, w = keep[:, None] * H, keep * w
            if len(in_flight) > delay:
                pushed, pushed_w = in_flight.popleft()
                X, w = X + pushed, w + pushed_w
        zs.append(X / w[:, None])
        ws.append(w)
    return np.stack(zs, axis=1), np.stack(ws, axis=1)


def adamw_step(state, X, G, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
    """``torch.optim.AdamW``'s rule, rows = nodes; ``state`` holds t, m, v."""
    state["t"] = state.get("t", 0) + 1
    b1, b2 = betas
    state["m"] = b1 * state.get("m", 0 * X) + (1 - b1) * G
    state["v"] = b2 * state.get("v", 0 * X) + (1 - b2) * G * G
    mhat, vhat = state["m"] / (1 - b1 ** state["t"]), state["v"] / (1 - b2 ** state["t"])
    return X * (1 - lr * weight_decay) - lr * mhat / (np.sqrt(vhat) + eps)


def diloco_trajectory(problem, topology, steps, lr, momentum=0.0, nesterov=False, weight_decay=0.0, period=1,
                      outer_lr=0.7, outer_momentum=0.9, outer_nesterov=True, averaging="allreduce", inner="SGD"):
    """DiLoCo: inner steps (SGD with momentum, or AdamW) on every node; after every
    ``period`` steps ``Delta = A - avg(X)``, ``Mo = mu Mo + Delta``, ``A -= outer_lr (Delta + mu Mo)``
    (heavy ball: ``Mo``), ``X = A``; avg = the mean (allreduce) or ``W X`` (gossip)."""
    X = problem.x0.copy()
    A, Mo, M, adam, out = X.copy(), np.zeros_like(X), np.zeros_like(X), {}, []
    J = np.full((problem.n, problem.n), 1 / problem.n)
    for t in range(steps):
        G = problem.grads(X)
        if inner == "AdamW":
            X = adamw_step(adam, X, G, lr, weight_decay)
        else:
            M, D = momentum_direction(M, G + weight_decay * X, momentum, nesterov)
            X = X - lr * D
        if (t + 1) % period == 0:
            Xa = (J if averaging == "allreduce" else topology.at(t).W) @ X
            Mo, D = momentum_direction(Mo, A - Xa, outer_momentum, outer_nesterov)
            A = A - outer_lr * D
            X = A.copy()
        out.append(X)
    return np.stack(out, axis=1)
