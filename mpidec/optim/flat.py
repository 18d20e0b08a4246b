"""Flat parameter buffers: an optimizer's parameters in one contiguous buffer per dtype and device.

At construction the optimizer moves every parameter into the flat buffer of its kind
(dtype and device), in parameter order, and makes the parameter a view of its slice
(``p.data = slice``, as DDP's gradient-as-bucket-view and Apex's flat buffers do). The
``Parameter`` objects stay the same, so the model, its ``state_dict`` (keys, shapes,
values) and its forward pass do not change; but consecutive parameters of one kind are
now one contiguous slice, so that

- a bucket's exchange sends its slice as it is and combines into it: no pack, no unpack
  (:meth:`mpidec.comm.Communicator.neighbor_average_async` sends a lone contiguous
  tensor from its own memory);
- an update rule runs over a bucket's slice in a few flat operations instead of one per
  parameter.

Per-parameter state that the rules handle in bulk (momentum, the tracker, scratch copies)
lives in *fields*: flat buffers of the same layout, one per name, each its own storage (a
model checkpoint holds the model only); the optimizer's state entries are views of them.

The layout holds while nobody moves the parameters. ``p.data = ...`` or ``model.to(...)``
(another dtype or device) after the optimizer was built would leave the optimizer
updating memory the model no longer reads; :meth:`FlatParams.check` (every step: one
pointer comparison per parameter) turns that into a clear error. Loading values into the
model (``load_state_dict`` without ``assign``, ``p.copy_``) writes into the flat buffers and
is fine. A module given *new* ``Parameter`` objects (``assign=True``, a new layer) is
another model than the one the optimizer was built on, for mpidec as for any
``torch.optim`` optimizer; that cannot be seen from the optimizer's side.
"""

from __future__ import annotations

import torch


class FlatParams:
    """The flat buffers of ``params`` (a list, in the optimizer's parameter order)."""

    def __init__(self, params):
        self.params = list(params)
        self._slot = {}                       # id(param) -> (kind, offset, numel)
        sizes: dict = {}
        for p in self.params:
            kind = (p.dtype, p.device)
            offset = sizes.get(kind, 0)
            self._slot[id(p)] = (kind, offset, p.numel())
            sizes[kind] = offset + p.numel()
        self.buffers = {kind: torch.empty(n, dtype=kind[0], device=kind[1]) for kind, n in sizes.items()}
        with torch.no_grad():
            for p in self.params:
                view = self._view(self.buffers, p)
                view.copy_(p)
                p.data = view
        self._pointers = [p.data_ptr() for p in self.params]
        self._fields: dict = {}               # name -> {kind: flat buffer}
        self._model_storages = {b.untyped_storage().data_ptr() for b in self.buffers.values()}
        self._storages = set(self._model_storages)

    def _view(self, buffers, p) -> torch.Tensor:
        kind, offset, numel = self._slot[id(p)]
        return buffers[kind][offset:offset + numel].view(p.shape)

    def slices(self, params, field: str | None = None) -> list[torch.Tensor]:
        """The 1-D slices (one per kind, in order of first appearance) covering ``params``,
        which must be consecutive in the optimizer's order: of the parameters' buffers, or of
        the field ``field``'s."""
        buffers = self.buffers if field is None else self._field(field)
        first, last = {}, {}
        for p in params:
            kind, offset, numel = self._slot[id(p)]
            first.setdefault(kind, offset)
            last[kind] = offset + numel
        return [buffers[kind][first[kind]:last[kind]] for kind in first]

    def view(self, field: str, p) -> torch.Tensor:
        """``p``'s view (its shape) of the field ``field`` (zeros when the field is new)."""
        return self._view(self._field(field), p)

    def _field(self, name: str) -> dict:
        buffers = self._fields.get(name)
        if buffers is None:
            buffers = self._fields[name] = {kind: torch.zeros_like(b) for kind, b in self.buffers.items()}
            self._storages.update(b.untyped_storage().data_ptr() for b in buffers.values())
        return buffers

    def is_model(self, tensor) -> bool:
        """Whether ``tensor`` is (a slice of) the parameters' flat buffers, not a field's."""
        return tensor.untyped_storage().data_ptr() in self._model_storages

    def is_flat(self, tensors) -> bool:
        """Whether every tensor is a slice of one of these flat buffers (of parameters or a field)."""
        return all(t.untyped_storage().data_ptr() in self._storages for t in tensors)

    def check(self) -> None:
        """Raise if a parameter no longer lives in its flat buffer (replaced after construction)."""
        for i, (p, pointer) in enumerate(zip(self.params, self._pointers)):
            if p.data_ptr() != pointer:
                raise RuntimeError(
                    f"parameter {i} (shape {tuple(p.shape)}) was replaced after the optimizer was built "
                    "(p.data = ..., model.to(...)): the optimizer keeps the parameters in its flat buffers "
                    "and would update memory the model no longer uses; move the model first, then build the "
                    "optimizer (loading values with load_state_dict or p.copy_ is fine: it writes into them)")
