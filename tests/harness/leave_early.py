"""Rank 1 leaves early, in the way argv[1] says (run by test_harness.py):

- ``exit3`` / ``exit0``: ``sys.exit(3)`` / ``sys.exit(0)`` while the others wait for it in a
  collective: the job must end within seconds, naming rank 1 and the call;
- ``return``: its ``main()`` returns, same;
- ``legit``: it returns while rank 0 goes on computing for a while and the others wait
  at exit: the job must end normally, exit status 0.
"""

import os
import sys
import time

import mpidec


def main(how: str) -> None:
    comm = mpidec.init()
    if comm.Get_rank() == 1:
        if how.startswith("exit"):
            sys.exit(int(how[4:]))
        return
    if how == "legit":
        if comm.Get_rank() == 0:
            end = time.monotonic() + 3 * float(os.environ.get("MPIDEC_EXIT_GRACE", "10"))
            while time.monotonic() < end:  # Python work: the main thread moves
                sum(i * i for i in range(10_000))
        return
    comm.Barrier()  # rank 1 never arrives


main(sys.argv[1])
