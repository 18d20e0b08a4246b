"""Rank 1 raises in the middle of asynchronous AD-PSGD training (run by test_adpsgd.py).

The other ranks keep averaging with rank 1's window and would never stop on their own:
only the abort hook installed by ``mpidec.init()`` ends the job.
"""

import torch

import mpidec
from mpidec.comm import MPICommunicator
from mpidec.optim import ADPSGD

mpidec.init()
comm = MPICommunicator()
x = torch.zeros(1000, requires_grad=True)
opt = ADPSGD([x], lr=0.1, comm=comm)
while True:
    x.grad = torch.ones_like(x)
    opt.step()
    if comm.rank == 1 and opt.steps == 50:
        raise RuntimeError("deliberate exception on rank 1 while the others average with it")
