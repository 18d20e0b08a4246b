"""DiLoCo / SlowMo outer optimizer (issue 19) on the simulator: the dense recursion, the
PmSGD and DmSGD special cases, wrapping a built optimizer, resume, bad input."""

import numpy as np
import pytest
import torch

from mpidec import optim
from mpidec import topology as T
from mpidec.comm import Simulator
from beyond_oracles import diloco_trajectory
from oracles import LeastSquares, assert_resume_is_bit_identical, descend, simulate

N, LR = 6, 0.05
CASES = [
    {"momentum": 0.8, "period": 3},                                                    # DiLoCo outer, SGD inside
    {"momentum": 0.8, "nesterov": True, "period": 2, "outer_lr": 1.0, "outer_momentum": 0.5,
     "outer_nesterov": False},                                                          # SlowMo
    {"momentum": 0.8, "period": 3, "averaging": "gossip"},
    {"inner": "AdamW", "weight_decay": 0.01, "period": 4, "outer_momentum": 0.6},
]


def dense(problem, topo, steps, lr=LR, **kwargs):
    return diloco_trajectory(problem, topo, steps, lr, **kwargs)


@pytest.mark.parametrize("kwargs", CASES, ids=str)
@pytest.mark.parametrize("topo", [T.ring(N), T.random_matching(N, seed=5)], ids=["ring", "matching"])
def test_trajectory_equals_dense_recursion(kwargs, topo):
    problem = LeastSquares(N, seed=1)
    problem.x0[:] = problem.x0[0]  # DiLoCo starts every worker from the same model
    got, _ = simulate(problem, topo, "DiLoCo", 60, lr=LR, **kwargs)
    want = dense(problem, topo, 60, **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert np.abs(want[:, -1] - want[:, 0]).max() > 0.1


@pytest.mark.parametrize("averaging, baseline", [("allreduce", "PmSGD"), ("gossip", "DmSGD")])
def test_one_step_periods_without_outer_momentum_are_pmsgd_and_dmsgd(averaging, baseline):
    problem, topo = LeastSquares(N, seed=4), T.ring(N)
    problem.x0[:] = problem.x0[0]
    got, _ = simulate(problem, topo, "DiLoCo", 50, lr=LR, momentum=0.7, period=1, outer_lr=1.0,
                      outer_momentum=0.0, averaging=averaging)
    want, _ = simulate(problem, topo, baseline, 50, lr=LR, momentum=0.7)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_wrapping_a_built_optimizer_equals_building_it_by_name_and_shares_the_groups():
    problem, topo = LeastSquares(N, seed=2), T.ring(N)
    problem.x0[:] = problem.x0[0]
    by_name, _ = simulate(problem, topo, "DiLoCo", 20, lr=LR, inner="AdamW", period=3)

    def wrapped(comm):
        x0 = torch.tensor(problem.x0[comm.rank])
        params = [x0[:4].clone().requires_grad_(), x0[4:].clone().requires_grad_()]
        opt = optim.DiLoCo.wrap(torch.optim.AdamW(params, lr=LR, weight_decay=0.0), period=3, comm=comm, topology=topo)
        out = descend(problem, comm.rank, opt, params, 20)
        opt.param_groups[0]["lr"] = 0.5
        return out, opt.inner.param_groups[0]["lr"], opt.inner.param_groups[0] is opt.param_groups[0]

    for rank, (traj, inner_lr, shared) in enumerate(Simulator(N).run(wrapped)):
        np.testing.assert_array_equal(traj, by_name[rank])
        assert inner_lr == 0.5 and shared


@pytest.mark.parametrize("kwargs", [CASES[0], CASES[3]], ids=["SGD", "AdamW"])
def test_resume_from_state_dict_is_bit_identical(kwargs):
    problem = LeastSquares(N, seed=5)
    problem.x0[:] = problem.x0[0]
    assert_resume_is_bit_identical(problem, "DiLoCo", T.random_matching(N, seed=9), 13, 17, lr=LR, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"inner": "Nope"}, "invalid inner 'Nope': give the name of a torch.optim optimizer"),
    ({"inner": "AdamW", "momentum": 0.9}, "inner AdamW takes no momentum"),
    ({"period": 0}, "invalid period 0"),
    ({"outer_momentum": 1.0}, "invalid outer_momentum"),
    ({"averaging": "ring"}, "invalid averaging 'ring'"),
])
def test_bad_settings_are_refused_with_the_argument_to_change(kwargs, message):
    comm = Simulator(2).comms[0]
    with pytest.raises(ValueError, match=message):
        optim.DiLoCo([torch.zeros(2, requires_grad=True)], lr=0.1, comm=comm, **kwargs)
