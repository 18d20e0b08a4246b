"""Flat parameter buffers (mpidec/optim/flat.py): invisible to the model, its checkpoints and
the optimizer's state_dict; parameters replaced after construction are a clear error."""

import io

import pytest
import torch

from mpidec import optim
from mpidec import topology as T
from mpidec.comm import Simulator

CASES = [("DmSGD", {"momentum": 0.9}), ("DmSGD", {"momentum": 0.9, "variant": "yu"}),
         ("DecentLaM", {"momentum": 0.9}), ("GT", {"momentum": 0.5}), ("LocalSGD", {"momentum": 0.9, "period": 2})]


def make_model(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    model[2].double()  # two dtypes: two flat buffers
    return model


def forward(model, x):
    return model[2](model[1](model[0](x)).double())


def train(model, opt, x, steps):
    for _ in range(steps):
        opt.zero_grad()
        forward(model, x).square().mean().backward()
        opt.step()


def saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("algorithm, kwargs", CASES, ids=lambda c: str(c))
def test_flat_layout_is_invisible_to_the_model_its_checkpoints_and_the_state_dict(algorithm, kwargs):
    def node(comm):
        model, x = make_model(), torch.randn(4, 5, generator=torch.Generator().manual_seed(comm.rank))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        params = list(model.parameters())
        out = forward(model, x)
        opt = optim.by_name(algorithm)(model.parameters(), lr=0.1, topology=T.ring(comm.size), comm=comm, **kwargs)
        # the same Parameter objects, the same keys, shapes, dtypes, values and outputs
        assert all(a is b for a, b in zip(params, model.parameters()))
        after = model.state_dict()
        assert list(after) == list(before)
        for k in before:
            assert after[k].shape == before[k].shape and after[k].dtype == before[k].dtype
            assert torch.equal(after[k], before[k])
        assert torch.equal(forward(model, x), out)
        # ... and they are views of one buffer per dtype, which the steps update
        assert len({p.untyped_storage().data_ptr() for p in model.parameters()}) == 2
        train(model, opt, x, 3)
        # a model checkpoint holds the model only (the optimizer's fields are other storages)
        model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        assert len(saved(model.state_dict())) < model_bytes + 4096
        # the optimizer's state: per parameter, tensors of its shape, as torch.optim keeps them
        state = opt.state_dict()
        for index, p in enumerate(model.parameters()):
            for name, value in state["state"].get(index, {}).items():
                assert value.shape == p.shape, name
        checkpoint = saved({"model": model.state_dict(), "optimizer": state})
        train(model, opt, x, 3)
        straight = forward(model, x)

        # resume into a fresh model and optimizer from the checkpoint's bytes: bit-identical
        loaded = torch.load(io.BytesIO(checkpoint))
        again = make_model(seed=1)
        opt2 = optim.by_name(algorithm)(again.parameters(), lr=0.1, topology=T.ring(comm.size), comm=comm, **kwargs)
        again.load_state_dict(loaded["model"])  # copies into the flat buffers: allowed after construction
        opt2.load_state_dict(loaded["optimizer"])
        train(again, opt2, x, 3)
        return torch.equal(forward(again, x), straight)

    assert Simulator(3).run(node) == [True] * 3


@pytest.mark.parametrize("replace", ["data", "to"])
def test_parameters_replaced_after_construction_are_a_clear_error(replace):
    def node(comm):
        model = make_model()
        opt = optim.DmSGD(model.parameters(), lr=0.1, momentum=0.9, topology=T.ring(comm.size), comm=comm)
        if replace == "data":
            model[0].weight.data = model[0].weight.data.clone()
        else:
            model.to(torch.float64)
        forward(model, torch.randn(4, 5).double() if replace == "to" else torch.randn(4, 5)).sum().backward()
        opt.step()

    with pytest.raises(RuntimeError, match=r"parameter 0 \(shape \(8, 5\)\) was replaced after the optimizer was built"):
        Simulator(2).run(node)
