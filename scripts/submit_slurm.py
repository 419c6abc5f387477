"""launch.py's SLURM executor: the same job list, submitted through submitit, returning at once.

Each run becomes one SLURM job running ``TrainJob``: train.py as a subprocess (through torchrun when the
job has several GPUs or nodes), its console output appended to ``RUN_DIR.log`` as with the local pool.
Runs whose needs are met (or are already queued) go first, batched into one job array per dependency;
a KD student whose teacher is not finished waits on the teacher's job with ``afterok:<id>``. The job id
of every submitted run is kept in ``RUN_DIR.slurm.json``: a later launch skips finished runs and runs whose
job is still in ``squeue``, and resubmits the rest (failed, cancelled, lost), which resume from last.pt.

Time limits and preemption: submitit asks SLURM for SIGUSR2 ``signal_delay_s`` before the limit; its
handler calls ``TrainJob.checkpoint``, which sends train.py SIGTERM (it saves last.pt and exits), waits
for it, and hands submitit the same job to requeue (``scontrol requeue``); the requeued job resumes.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import submitit

from engine.output_paths import check_output_dir, check_output_file

STATE_SUFFIX = ".slurm.json"
SIGNAL_DELAY_S = 120  # SIGUSR2 this long before the time limit: enough for train.py to save last.pt
STOP_WAIT_S = 100  # how long checkpoint() waits for train.py to exit after SIGTERM
MAX_TIMEOUTS = 50  # requeues after a time limit before submitit gives up (preemptions do not count)
POLL_S = 1.0


def _ignore_usr2() -> None:
    # SLURM may deliver the pre-timeout SIGUSR2 to every process of the step; its default action would kill
    # train.py before it saves. Ignored here, it stays ignored through exec (and for torchrun's workers).
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class TrainJob(submitit.helpers.Checkpointable):
    """One run, as submitit executes it on the allocated node(s). Only standard-library state, so it
    pickles by value and needs nothing of this repository on the job's ``sys.path``."""

    def __init__(self, python: str, train_args: list[str], cwd: str, log_path: str, gpus: int = 1, nodes: int = 1):
        self.python, self.train_args, self.cwd, self.log_path = python, list(train_args), cwd, log_path
        self.gpus, self.nodes = gpus, nodes
        self._process: subprocess.Popen | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_process"] = None
        return state

    def command(self) -> list[str]:
        if self.gpus <= 1 and self.nodes <= 1:
            return [self.python, *self.train_args]
        torchrun = [self.python, "-m", "torch.distributed.run", f"--nproc_per_node={max(self.gpus, 1)}"]
        if self.nodes <= 1:
            return [*torchrun, "--standalone", "--nnodes=1", *self.train_args]
        env = submitit.JobEnvironment()  # one task per node: the first node hosts the rendezvous
        return [
            *torchrun,
            f"--nnodes={self.nodes}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={env.hostnames[0]}:29500",
            f"--rdzv_id={env.job_id}",
            *self.train_args,
        ]

    def __call__(self) -> str:
        Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(), cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_ignore_usr2
            )
        # poll(), not wait(): checkpoint() runs in a signal handler of this thread and polls the same process
        while (code := self._process.poll()) is None:
            time.sleep(POLL_S)
        if code != 0:
            raise RuntimeError(f"train.py exited with status {code} (log: {self.log_path})")
        return self.log_path

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Stop train.py the way it saves (SIGTERM), then requeue this same job: the rerun resumes from last.pt."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            deadline = time.time() + STOP_WAIT_S
            while process.poll() is None and time.time() < deadline:
                time.sleep(0.2)
        return super().checkpoint(*args, **kwargs)


def state_path(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + STATE_SUFFIX)


def recorded_job(run_dir: Path) -> str | None:
    try:
        return str(json.loads(state_path(run_dir).read_text())["job_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def queued_jobs() -> dict[str, str] | None:
    """This user's jobs in the queue (pending, running, requeued, ...), one per array element: id -> state.
    None if squeue is not on PATH."""
    if shutil.which("squeue") is None:
        return None
    result = subprocess.run(
        ["squeue", "--noheader", "--array", f"--user={getpass.getuser()}", "--format=%i %T"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"squeue failed: {result.stderr.strip() or result.stdout.strip()}")
    return dict(
        line.split(None, 1) if " " in line.strip() else (line.strip(), "?")
        for line in result.stdout.splitlines()
        if line.strip()
    )


def default_log_dir(run_dirs: list[Path]) -> Path:
    if not run_dirs:
        return Path("runs", "slurm")
    common = Path(os.path.commonpath([os.path.abspath(d) for d in run_dirs]))
    if any(common == Path(os.path.abspath(d)) for d in run_dirs):
        common = common.parent
    return Path(os.path.relpath(common)) / "slurm"


class Plan:
    """What a launch does with each job: skip it (finished, or its job is queued), submit it (with the
    dependencies it waits on), or block it (a need that is neither finished nor on its way)."""

    def __init__(self, jobs, is_finished, queue: dict[str, str] | None):
        self.jobs, self.queue = jobs, queue or {}
        self.finished = [job for job in jobs if is_finished(job.run_dir)]
        self.alive: dict = {}  # job -> its queued SLURM job id
        for job in jobs:
            job_id = recorded_job(job.run_dir)
            if job not in self.finished and job_id is not None and job_id in self.queue:
                self.alive[job] = job_id
        submit = [job for job in jobs if job not in self.finished and job not in self.alive]
        by_dir = {job.run_dir: job for job in submit}
        alive_dirs = {job.run_dir: job_id for job, job_id in self.alive.items()}
        self.blocked: dict = {}  # job -> the run directory it cannot wait for
        self.waits: dict = {}  # job -> tuple of (kind, value): ("id", slurm id) or ("run", run dir to submit)
        for job in submit:
            waits = []
            for need in job.needs:
                if is_finished(need):
                    continue
                if need in alive_dirs:
                    waits.append(("id", alive_dirs[need]))
                elif need in by_dir:
                    waits.append(("run", need))
                else:
                    self.blocked[job] = need
            self.waits[job] = tuple(waits)
        changed = True  # a job waiting on a blocked one, or a cycle, is blocked too
        while changed:
            changed = False
            for job in submit:
                if job in self.blocked:
                    continue
                runs = [value for kind, value in self.waits[job] if kind == "run"]
                if any(by_dir[r] in self.blocked for r in runs) or self._depth(job, by_dir, set()) is None:
                    self.blocked[job] = next((r for r in runs), job.run_dir)
                    changed = True
        self.submit = [job for job in submit if job not in self.blocked]
        self.groups: list[tuple[tuple, list]] = []  # (waits, jobs): one submission (an array) each
        ordered = sorted(self.submit, key=lambda job: self._depth(job, by_dir, set()))
        for job in ordered:
            key = (self._depth(job, by_dir, set()), self.waits[job])
            for group_key, members in self.groups:
                if group_key == key:
                    members.append(job)
                    break
            else:
                self.groups.append((key, [job]))

    def _depth(self, job, by_dir, seen) -> int | None:
        if job in seen:
            return None  # a cycle
        depths = [0]
        for kind, value in self.waits.get(job, ()):
            if kind == "run":
                depth = self._depth(by_dir[value], by_dir, seen | {job})
                if depth is None:
                    return None
                depths.append(depth + 1)
        return max(depths)


def dependency(waits: tuple, submitted: dict) -> str | None:
    ids = [value if kind == "id" else submitted.get(value, f"<job of {value}>") for kind, value in waits]
    return ("afterok:" + ":".join(ids)) if ids else None


def sbatch_parameters(options) -> dict:
    return {
        "partition": options.partition,
        "time": options.timeout_min,
        "nodes": options.nodes,
        "ntasks_per_node": 1,
        "gpus_per_node": options.gpus_per_job or None,
        "job_name": "tffd",
        "signal_delay_s": SIGNAL_DELAY_S,
    }


def _shown(parameters: dict, dep: str | None, count: int) -> str:
    words = [
        f"--{key.replace('_', '-')}={value}"
        for key, value in parameters.items()
        if value is not None and key not in ("signal_delay_s",)
    ]
    words.append(f"--signal=USR2@{parameters['signal_delay_s']}")
    if count > 1:
        words.append(f"--array=0-{count - 1}")
    if dep:
        words += [f"--dependency={dep}", "--kill-on-invalid-dep=yes"]
    return "sbatch " + " ".join(words)


def submit_jobs(jobs, options, is_finished, out=None) -> int:
    """Submit (or with ``options.dry_run`` show) every job not finished nor queued. 0 if all are finished,
    queued or submitted; 1 if some are blocked."""
    out = out or sys.stdout

    def say(message: str) -> None:
        print(message, file=out, flush=True)

    queue = queued_jobs()
    if queue is None and not options.dry_run:
        raise RuntimeError("squeue not found")
    plan = Plan(jobs, is_finished, queue)
    log_dir = Path(options.slurm_log_dir) if options.slurm_log_dir else default_log_dir([j.run_dir for j in jobs])
    check_output_dir(log_dir, "--slurm-log-dir")
    for job in plan.submit:
        check_output_file(state_path(job.run_dir), f"job {job.run_dir}: its SLURM state file", make_parents=True)
    parameters = sbatch_parameters(options)
    for job in jobs:
        if job in plan.finished:
            say(f"# finished: {job.shown()}")
        elif job in plan.alive:
            say(f"# {plan.queue[plan.alive[job]].lower()} as job {plan.alive[job]}: {job.shown()}")
        elif job in plan.blocked:
            say(f"BLOCKED {job.run_dir}: needs the finished run {plan.blocked[job]}")
    submitted: dict[Path, str] = {}
    for (_, waits), members in plan.groups:
        dep = dependency(waits, submitted)
        if options.dry_run:
            say(_shown(parameters, dep, len(members)))
            for job in members:
                say(f"  {job.shown()}")
            continue
        executor = submitit.SlurmExecutor(folder=log_dir, max_num_timeout=MAX_TIMEOUTS)
        extra = {"dependency": dep, "kill-on-invalid-dep": "yes"} if dep else {}
        executor.update_parameters(
            **{k: v for k, v in parameters.items() if v is not None}, additional_parameters=extra
        )
        functions = [
            TrainJob(
                sys.executable,
                job.command()[1:],
                os.getcwd(),
                str(job.log_path.resolve()),
                options.gpus_per_job,
                options.nodes,
            )
            for job in members
        ]
        with executor.batch():
            handles = [executor.submit(function) for function in functions]
        array = handles[0].job_id.split("_")[0]
        say(
            f"submitted {'array ' if len(members) > 1 else ''}job {array} ({len(members)} run"
            f"{'s' if len(members) > 1 else ''}{', after ' + dep if dep else ''}); SLURM logs in {log_dir}"
        )
        for job, handle in zip(members, handles):
            submitted[job.run_dir] = handle.job_id
            path = state_path(job.run_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                json.dumps(
                    {
                        "job_id": handle.job_id,
                        "slurm_log": str(handle.paths.stdout),
                        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    }
                )
                + "\n"
            )
            say(f"  job {handle.job_id}: {job.run_dir} (log: {job.log_path}; SLURM log: {handle.paths.stdout})")
    verb = "to submit" if options.dry_run else "submitted"
    say(
        f"# {len(jobs)} runs: {len(plan.submit)} {verb} in {len(plan.groups)} jobs/arrays, {len(plan.finished)} "
        f"already finished, {len(plan.alive)} queued or running, {len(plan.blocked)} blocked"
        + ("; squeue not found, queued jobs not checked" if queue is None else "")
    )
    return 1 if plan.blocked else 0


# Pickled by value: the job's node needs submitit and the interpreter, not this file on its sys.path.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
