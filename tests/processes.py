"""What a test sees of the processes it launched, from ``/proc`` (Linux): a process's
children, and whether a process has its handler for a signal in place."""

import signal
from pathlib import Path


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def catches(pid: int, signum: int = signal.SIGTERM) -> bool:
    """Whether process ``pid`` catches ``signum`` (its ``SigCgt`` mask); False once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught >> (signum - 1) & 1)
