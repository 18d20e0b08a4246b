"""The jobs of the SLURM stage (tests/stage_slurm.sh), run under a real SLURM.

Every job runs ``jobs/slurm-cpu.sbatch`` with the same training flags, submitted with
``sbatch`` from a folder outside the repository, on two emulated nodes, 2 ranks each:

    normal     runs through: the reference
    preempted  SIGTERM to the batch shell in mid-training (what ``--signal=B:TERM@T`` sends
               before a time limit): checkpoint, requeue, resume
    startup    SIGTERM to the ranks while they start (their handler is in place, training
               has not begun): requeued, starts again
    twin-a/b   one job name, submitted together, running at the same time: each in its own
               folder (the job id's)
    mpirun     the mpirun fallback (MPIDEC_LAUNCHER=mpirun), SIGTERM to the batch shell in
               mid-training: the shell passes it to mpirun, mpirun to the ranks
    bad-flag   a flag mpidec rejects, MPIDEC_OUT a folder whose summary.json says "preempted"
               (an earlier run's): FAILED (srun reports the 2 or its ranks' 143), not requeued

Each job must end COMPLETED with the expected number of restarts and a final checkpoint
bit-identical to ``normal``'s (every rank's model and optimizer state), except bad-flag.

    python tests/slurm/scenarios.py REPO WORKDIR      (SLURM_CONF set; run as the stage does)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/
from processes import catches  # noqa: E402

RANKS_PER_NODE, NODES = 2, 2
TRAIN_FLAGS = ["--epochs", "8", "--log-every", "5", "--checkpoint-every", "30"]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
TIME_LIMIT_S = 900  # the whole stage
STALE_SUMMARY = '{"status": "preempted"}\n'
RESUMED = ("requeueing job", "resuming from its checkpoint", "mpidec job: finished")


def log(message: str) -> None:
    print(f"[slurm stage {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Job:
    """One submission: what to do to it while it runs, and what it must end as."""

    def __init__(self, name, *, job_name=None, restarts=0, state="COMPLETED", exit_code="0:0",
                 says=("mpidec job: finished",), env=None, flags=()):
        """``exit_code`` None: any failure; ``says``: what its output must hold."""
        self.name, self.job_name = name, job_name or name
        self.restarts, self.state, self.exit_code, self.says = restarts, state, exit_code, says
        self.env, self.flags = dict(env or {}), list(flags)
        self.id = None
        self.info: dict = {}
        self.signalled_at = None  # what the job looked like when the stage signalled it
        self.problems: list[str] = []

    def submit(self, repo: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MPIDEC_ROOT"}  # found from the script path
        env.update(self.env)
        command = ["sbatch", "--parsable", f"--job-name={self.job_name}", f"--nodes={NODES}",
                   f"--ntasks-per-node={RANKS_PER_NODE}", "--time=10", str(repo / "jobs/slurm-cpu.sbatch"),
                   *TRAIN_FLAGS, *self.flags]
        self.id = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout.strip()
        log(f"{self.name}: submitted job {self.id}")

    @property
    def out(self) -> Path:
        return Path(self.env.get("MPIDEC_OUT", f"results/slurm/{self.job_name}-{self.id}"))

    @property
    def output(self) -> str:
        path = Path(f"{self.job_name}-{self.id}.out")
        return path.read_text(errors="replace") if path.exists() else ""

    def refresh(self) -> None:
        text = subprocess.run(["scontrol", "show", "job", "-o", self.id], capture_output=True, text=True).stdout
        self.info = dict(item.split("=", 1) for item in text.split() if "=" in item)

    @property
    def job_state(self) -> str:
        return self.info.get("JobState", "?")

    def act(self) -> None:
        """Called every poll while the job is not finished."""


def trained_steps(out: Path) -> int:
    """The last step logged in OUT/metrics.jsonl (-1: none yet)."""
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return -1
    steps = [json.loads(line).get("step", -1) for line in lines if line.strip().endswith("}")]
    return max(steps, default=-1)


class SignalMidTraining(Job):
    """SIGTERM to the batch shell (scancel --batch) once the first start has logged step 10."""

    def act(self):
        if self.signalled_at is None and self.job_state == "RUNNING" and trained_steps(self.out) >= 10:
            self.signalled_at = f"step {trained_steps(self.out)} logged"
            subprocess.run(["scancel", "--batch", "--signal=TERM", self.id], check=True)
            log(f"{self.name}: SIGTERM to the batch shell ({self.signalled_at})")


def rank_pids(job_id: str) -> list[int]:
    """The `python -m mpidec train` processes of a job (this host runs both nodes)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if not (os.path.basename(argv[0]).startswith(b"python") and argv[1:4] == [b"-m", b"mpidec", b"train"]):
                continue
            if f"SLURM_JOB_ID={job_id}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


class SignalAtStartup(Job):
    """SIGTERM to the ranks (scancel, every step) once all of them catch it, before training."""

    def act(self):
        if self.signalled_at is not None or self.job_state != "RUNNING":
            return
        pids = rank_pids(self.id)
        if len(pids) == NODES * RANKS_PER_NODE and all(map(catches, pids)):
            started = trained_steps(self.out) >= 0
            subprocess.run(["scancel", "--signal=TERM", self.id], check=True)
            self.signalled_at = "training had begun" if started else "start-up: nothing logged yet"
            log(f"{self.name}: SIGTERM to the ranks ({self.signalled_at})")
            if started:
                self.problems.append("the start-up signal came too late (training had begun): the machine is too slow")


def run_all(jobs: list[Job]) -> set[frozenset]:
    """Poll until every job is finished; the sets of jobs seen running together."""
    together = set()
    deadline = time.monotonic() + TIME_LIMIT_S
    pending = list(jobs)
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"FAILED: jobs {[j.name for j in pending]} not finished after {TIME_LIMIT_S} s")
        for job in pending:
            job.refresh()
            job.act()
        together.add(frozenset(j.name for j in jobs if j.job_state == "RUNNING"))
        for job in [j for j in pending if j.job_state in TERMINAL]:
            log(f"{job.name}: {job.job_state}, exit {job.info.get('ExitCode')}, restarts {job.info.get('Restarts')}")
            pending.remove(job)
        time.sleep(0.2)
    return together


def final_states(out: Path) -> dict:
    """Every rank's state in OUT's latest checkpoint: {rank file: state}."""
    import torch

    folder = out / "checkpoints" / (out / "checkpoints/latest").read_text().strip()
    return {path.name: torch.load(path, map_location="cpu", weights_only=False)
            for path in sorted(folder.glob("rank-*.pt"))}


def differences(a, b, where="") -> list[str]:
    """Where two nested states differ (tensors and arrays bit for bit)."""
    import numpy as np
    import torch

    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return [] if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b) else [where]

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys"]
        return [d for key in a for d in differences(a[key], b[key], f"{where}.{key}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def check(job: Job, reference: dict | None) -> list[str]:
    problems = list(job.problems)
    exit_code = job.info.get("ExitCode")
    exit_ok = exit_code == job.exit_code if job.exit_code else exit_code not in (None, "0:0")
    if job.job_state != job.state or not exit_ok:
        problems.append(f"ended {job.job_state} with exit {exit_code}, expected {job.state} with "
                        f"{job.exit_code or 'a failure'}")
    problems += [f"its output does not say {text!r}" for text in job.says if text not in job.output]
    if int(job.info.get("Restarts", -1)) != job.restarts:
        problems.append(f"started {int(job.info.get('Restarts', -1)) + 1} times, expected {job.restarts + 1}")
    if job.state != "COMPLETED":
        return problems
    summary = json.loads((job.out / "summary.json").read_text())
    if summary.get("status") != "finished":
        problems.append(f"summary.json status {summary.get('status')!r}")
    if reference is not None:
        states = final_states(job.out)
        if states.keys() != reference.keys():
            problems.append(f"checkpoint files {sorted(states)} != the reference's {sorted(reference)}")
        for name in sorted(states.keys() & reference.keys()):
            # the torch generator is the one training draws from; mpidec never seeds numpy's or
            # Python's global generators, so their states differ between any two processes
            def kept(state):
                return {"step": state["step"], "model": state["model"], "optimizer": state["optimizer"],
                        "torch generator": state["rng"]["torch"]}

            diff = differences(kept(states[name]), kept(reference[name]))
            if diff:
                problems.append(f"{name} differs from the uninterrupted run at {diff[:3]}")
    return problems


def main(repo: Path) -> int:
    started = time.monotonic()
    jobs = [
        Job("normal"),
        SignalMidTraining("preempted", restarts=1, says=RESUMED),
        SignalAtStartup("startup", restarts=1, says=("requeueing job", "mpidec job: finished")),
        Job("twin-a", job_name="twin"),
        Job("twin-b", job_name="twin"),
        # T = odls_base_sigkill_timeout 10 s (the sbatch's default is 60): on a loaded machine
        # a rank's clock thread can miss its ticks for over 2 s, so mpirun's SIGCONT reads as
        # a resume (mpidec/signals.py: safe by design) and the stop comes with SIGTERM T s
        # later; with T = 60 this 88-step job once finished first (CI: COMPLETED, no requeue).
        SignalMidTraining("mpirun", restarts=1, says=RESUMED,
                          env={"MPIDEC_LAUNCHER": "mpirun", "OMPI_MCA_odls_base_sigkill_timeout": "10"}),
        Job("bad-flag", state="FAILED", exit_code=None, says=("mpidec train: error: --algorithm", "not requeued"),
            env={"MPIDEC_OUT": "stale"}, flags=["--algorithm", "NoSuchAlgorithm"]),
    ]
    stale = Path("stale/summary.json")
    stale.parent.mkdir()
    stale.write_text(STALE_SUMMARY)
    for job in jobs:
        job.submit(repo)
    together = run_all(jobs)
    reference = final_states(jobs[0].out) if jobs[0].job_state == "COMPLETED" else None
    failed = 0
    for job in jobs:
        problems = check(job, None if job is jobs[0] else reference)
        if job.name == "twin-a" and not any({"twin-a", "twin-b"} <= names for names in together):
            problems.append("twin-a and twin-b never ran at the same time")
        if isinstance(job, (SignalMidTraining, SignalAtStartup)) and job.signalled_at is None:
            problems.append("never signalled (it did not reach the point to signal it at)")
        if problems:
            failed += 1
            log(f"FAIL {job.name} (job {job.id}): " + "; ".join(problems))
            print(f"---- {job.job_name}-{job.id}.out\n{job.output}---- end", flush=True)
        else:
            log(f"ok   {job.name} (job {job.id})")
    log(f"{len(jobs) - failed} of {len(jobs)} jobs as expected in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    os.chdir(sys.argv[2])
    sys.exit(main(Path(sys.argv[1]).resolve()))
