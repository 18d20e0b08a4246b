"""An MPI program whose rank 1 raises while the others wait in a collective."""

import mpidec

comm = mpidec.init()
if comm.Get_rank() == 1:
    raise RuntimeError("deliberate exception on rank 1")
comm.Barrier()
