"""Mixed precision: gradients unscaled as ``torch.amp.GradScaler`` does it, for the
optimizers that take over its unscaling (``_step_supports_amp_scaling``)."""

from __future__ import annotations

import torch


def unscale_(params, scale: torch.Tensor) -> None:
    """Divide the gradients by a GradScaler's ``scale`` in place, exactly as
    ``GradScaler.unscale_`` does (multiply by the float32 reciprocal computed in float64)."""
    by_device = {}
    for p in params:
        if p.grad is not None:
            by_device.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    inv = scale.double().reciprocal().float()
    for (device, _), grads in by_device.items():
        found = torch.zeros(1, device=device)  # the step's inf check was done by the scaler
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, inv.to(device))


def skip_for_amp(opt) -> bool:
    """Under ``torch.amp.GradScaler.step``: whether ``opt`` skips this step because a rank's
    gradients are not finite (``opt._overflowed`` says which ranks decide); otherwise unscale
    the gradients if the scaler has not."""
    found_inf = getattr(opt, "found_inf", None)  # set by GradScaler.step for this call only
    if found_inf is None:
        return False
    if opt._overflowed(float(found_inf.sum()) > 0):
        return True
    scale = getattr(opt, "grad_scale", None)  # None: scaler.unscale_(optimizer) already ran
    if scale is not None:
        unscale_(opt.params, scale)
    return False
