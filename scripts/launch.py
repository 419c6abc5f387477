"""Run a list of train.py jobs on a pool of GPUs (a few at a time, each pinned to one GPU) or on SLURM, finished
runs skipped, so the same launch can be repeated after a crash or a preemption until all are done.

    python scripts/launch.py JOB_FILE|- [--gpus 0,1,2,3] [--jobs N] [--dry-run]
    python scripts/launch.py JOB_FILE|- --executor slurm [--partition P] [--gpus-per-job N] [--timeout-min M]
                             [--dry-run]

A job line is shell words: ``[--needs RUN_DIR ...] RUN_DIR CONFIG [KEY=VALUE ...]``; blank lines and
``#`` comments are skipped. A job runs ``python train.py --config CONFIG KEY=VALUE... --run-dir RUN_DIR``
with its console output in ``RUN_DIR.log``; it starts once every ``--needs`` run (e.g. its teacher's)
has finished. A run whose metrics.json says it finished is skipped; an unfinished one is resumed by
train.py; one whose lock another live process holds (a run of an earlier launch that was killed) is
watched as running until that process ends, and resumed here if it is left unfinished. Every job's config,
run directory and log path are checked before any job starts (``--dry-run`` too).
scripts/reproduce_cifar100.sh, scripts/reproduce_selfkd.sh and scripts/sweep.py launch through this file.

Executors (``--executor``), one job list and one skip rule for both:
  local  (default) this machine: a pool of one job per visible GPU (``--gpus``, ``--jobs``), one at a time
         on the CPU; waits until every job is done. This is our own pool, not submitit's LocalExecutor,
         because that one starts every job at once on the same first GPUs (it hands each job
         ``visible_gpus[:gpus_per_node]``) and knows no dependencies, so it cannot pin one job per GPU.
  slurm  submit every run as a SLURM job through submitit and return at once (scripts/submit_slurm.py):
         ``--partition P --gpus-per-job N --timeout-min M [--nodes K] [--slurm-log-dir DIR]``; runs
         whose needs are met go in one job array, a run whose need is not finished waits on that run's
         job (``afterok:<id>``). Finished runs and runs whose job (kept in ``RUN_DIR.slurm.json``) is
         still queued or running are skipped; failed or unfinished ones are resubmitted and resume from
         last.pt. At a time limit or a preemption the job saves (train.py gets SIGTERM) and is requeued.
``--dry-run`` prints the plan (for slurm: the sbatch parameters and dependencies) and submits nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import RunDirError, UserError
from engine.builder import check_terms_combine
from engine.cli import exit_with
from engine.config import load_config
from engine.output_paths import check_output_dir, check_output_file
from engine.run_dir import RunLock, read_metrics

REPO = Path(__file__).resolve().parents[1]

TRAIN = REPO / "train.py"
POLL_SECONDS = 0.5  # how often finished jobs are noticed; polling costs nothing measurable
DEFAULT_TIMEOUT_MIN = 24 * 60  # slurm: a job's time limit unless --timeout-min says otherwise


@dataclass(frozen=True)
class Job:
    run_dir: Path
    config: str
    overrides: tuple[str, ...] = ()
    needs: tuple[Path, ...] = ()  # run directories that must hold finished runs first

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, str(TRAIN), "--config", self.config, *self.overrides, "--run-dir", str(self.run_dir)]

    def shown(self) -> str:
        """The command as a user would type it from the current directory."""
        text = shlex.join(self.command(python="python")).replace(str(TRAIN), os.path.relpath(TRAIN), 1)
        return text + (f"  # after {', '.join(map(str, self.needs))}" if self.needs else "")

    @property
    def log_path(self) -> Path:
        return self.run_dir.with_name(self.run_dir.name + ".log")


def parse_job(line: str) -> Job | None:
    words = shlex.split(line, comments=True)
    if not words:
        return None
    needs = []
    while words and words[0] == "--needs":
        if len(words) < 2:
            raise UserError(f"--needs without a run directory in job line {line.strip()!r}")
        needs.append(Path(words[1]))
        words = words[2:]
    if len(words) < 2:
        raise UserError(f"a job line needs RUN_DIR and CONFIG, got {line.strip()!r}")
    return Job(Path(words[0]), words[1], tuple(words[2:]), tuple(needs))


def is_finished(run_dir: Path) -> bool:
    try:
        metrics = read_metrics(run_dir)
    except RunDirError:
        return False  # damaged: its job is run, and train.py says what is wrong with it
    return bool(metrics and metrics.get("finished"))


def default_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (none on a CPU machine)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu for gpu in visible.split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def _summary(run_dir: Path) -> str:
    try:
        metrics = read_metrics(run_dir) or {}
    except RunDirError:
        return ""
    if metrics.get("best_acc1") is None:
        return ""
    return f": best top-1 {metrics['best_acc1']:.2f}% (epoch {metrics['best_epoch']}), last {metrics['last_acc1']:.2f}%"


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


class _Stop:
    """SIGINT/SIGTERM: start nothing new, pass SIGTERM on to running jobs (train.py then saves and stops)."""

    def __init__(self):
        self.signum = 0

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def check_jobs(jobs: list[Job]) -> None:
    seen = set()
    for job in jobs:
        if job.run_dir in seen:
            raise UserError(f"two jobs write to the same run directory {job.run_dir}")
        seen.add(job.run_dir)


def run_jobs(
    jobs: list[Job], gpus: list[str] | None = None, parallel: int | None = None, dry_run: bool = False, out=None
) -> int:
    """Run ``jobs`` in order as slots free up, each once its ``needs`` have finished. Returns 0 if every
    job finished, 1 if some failed or were blocked, 128 + the signal number if stopped by a signal."""
    check_jobs(jobs)
    out = out or sys.stdout
    if dry_run:
        done = [job for job in jobs if is_finished(job.run_dir)]
        for job in jobs:
            holder = None if job in done else RunLock.holder(job.run_dir)
            mark = "# finished: " if job in done else f"# running in another process ({holder}): " if holder else ""
            print(mark + job.shown(), file=out)
        print(f"# {len(jobs)} runs: {len(jobs) - len(done)} to run, {len(done)} already finished", file=out)
        return 0
    gpus = default_gpus() if gpus is None else gpus
    return _Pool(jobs, gpus, parallel or max(len(gpus), 1), out).run()


class _Pool:
    """``parallel`` slots, slot i pinned to GPU ``gpus[i % len(gpus)]`` (or the CPU without GPUs)."""

    def __init__(self, jobs: list[Job], gpus: list[str], parallel: int, out):
        self.jobs, self.out = jobs, out
        self.slots: list[str | None] = [gpus[i % len(gpus)] if gpus else None for i in range(parallel)]
        self.tag = {job: f"[{index}/{len(jobs)}]" for index, job in enumerate(jobs, 1)}
        self.waiting = [job for job in jobs if not is_finished(job.run_dir)]
        self.running: dict[int, tuple[Job, subprocess.Popen, float]] = {}  # slot -> (job, process, start)
        self.elsewhere: list[Job] = []  # runs that another live process holds (an earlier launch's): watched
        self.failed: list[Job] = []
        self.blocked: list[Job] = []
        where = f"GPUs {','.join(gpus)}" if gpus else "the CPU"
        self.say(
            f"{len(jobs)} runs: {len(jobs) - len(self.waiting)} already finished, {len(self.waiting)} to run, "
            f"{parallel} at a time on {where}"
        )

    def say(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    def run(self) -> int:
        terminated: set[int] = set()
        with _Stop() as stop:
            while self.running or (not stop.signum and (self.waiting or self.elsewhere)):
                self._reap(stopping=bool(stop.signum))
                self._watch_elsewhere()
                if stop.signum:  # once per job: train.py saves last.pt and exits
                    for _, process, _ in self.running.values():
                        if process.pid not in terminated:
                            process.send_signal(signal.SIGTERM)
                            terminated.add(process.pid)
                else:
                    self._block_unreachable()
                    self._start_ready()
                if self.running or self.elsewhere:
                    time.sleep(POLL_SECONDS)
        if stop.signum:
            others = f" ({len(self.elsewhere)} go on in other processes)" if self.elsewhere else ""
            self.say(f"stopped by {signal.Signals(stop.signum).name}{others}; launch the same jobs again to resume")
            return 128 + stop.signum
        finished = len(self.jobs) - len(self.failed) - len(self.blocked)
        self.say(f"{len(self.jobs)} runs: {finished} finished, {len(self.failed)} failed, {len(self.blocked)} blocked")
        return 1 if self.failed or self.blocked else 0

    def _reap(self, stopping: bool) -> None:
        for slot, (job, process, began) in list(self.running.items()):
            if process.poll() is None:
                continue
            del self.running[slot]
            took = time.strftime("%H:%M:%S", time.gmtime(time.time() - began))
            if process.returncode == 0 and is_finished(job.run_dir):
                self.say(f"{self.tag[job]} finished {job.run_dir} in {took}{_summary(job.run_dir)}")
            elif stopping:
                self.say(f"{self.tag[job]} stopped {job.run_dir} after {took}; the next launch resumes it")
            elif self._held_elsewhere(job):  # another process took its lock first: train.py refused to start
                pass
            else:
                self.failed.append(job)
                self.say(
                    f"{self.tag[job]} FAILED (exit {process.returncode}) {job.run_dir}: "
                    f"{_last_line(job.log_path)} (log: {job.log_path})"
                )

    def _held_elsewhere(self, job: Job) -> bool:
        """If another live process holds ``job``'s run (a launch killed and relaunched while its runs go
        on), watch it as running instead of starting it."""
        holder = RunLock.holder(job.run_dir)
        if holder is not None:
            self.elsewhere.append(job)
            self.say(f"{self.tag[job]} running in another process ({holder}): {job.run_dir}; waiting for it")
        return holder is not None

    def _watch_elsewhere(self) -> None:
        for job in list(self.elsewhere):
            if RunLock.holder(job.run_dir) is not None:
                continue
            self.elsewhere.remove(job)
            if is_finished(job.run_dir):
                self.say(f"{self.tag[job]} finished {job.run_dir} in another process{_summary(job.run_dir)}")
            else:
                self.waiting.insert(0, job)
                self.say(f"{self.tag[job]} {job.run_dir} was left unfinished by the other process; resuming it here")

    def _start_ready(self) -> None:
        for slot, gpu in enumerate(self.slots):
            if slot in self.running:
                continue
            job = next((j for j in self.waiting if all(is_finished(n) for n in j.needs)), None)
            while job is not None and self._held_elsewhere(job):
                self.waiting.remove(job)
                job = next((j for j in self.waiting if all(is_finished(n) for n in j.needs)), None)
            if job is None:
                return
            self.waiting.remove(job)
            self.running[slot] = (job, _start(job, gpu), time.time())
            self.say(
                f"{self.tag[job]} started {job.run_dir} on {'GPU ' + gpu if gpu is not None else 'the CPU'} "
                f"(log: {job.log_path})"
            )

    def _block_unreachable(self) -> None:
        """Drop the waiting jobs whose needs can no longer finish: not finished, and neither running nor
        waiting (failed, or not part of this launch). With nothing running and no job ready, the rest wait
        on each other (a cycle): drop them too."""
        while True:
            active = (
                {j.run_dir for j in self.waiting}
                | {j.run_dir for j, _, _ in self.running.values()}
                | {j.run_dir for j in self.elsewhere}
            )
            stuck = [j for j in self.waiting if any(not is_finished(n) and n not in active for n in j.needs)]
            ready = any(all(is_finished(n) for n in j.needs) for j in self.waiting)
            if not stuck and not self.running and not self.elsewhere and not ready:
                stuck = list(self.waiting)
            if not stuck:
                return
            for job in stuck:
                self.waiting.remove(job)
                self.blocked.append(job)
                missing = next(n for n in job.needs if not is_finished(n))
                self.say(f"{self.tag[job]} BLOCKED {job.run_dir}: needs the finished run {missing}")


def _start(job: Job, gpu: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log_path, "ab") as log:
        # Own session: a Ctrl-C reaches the launcher only, which stops the jobs with one SIGTERM each.
        return subprocess.Popen(job.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpus", help="comma-separated GPU ids for CUDA_VISIBLE_DEVICES (default: all visible; none on a CPU machine)"
    )
    parser.add_argument("--jobs", type=int, help="runs at a time, spread over the GPUs (default: one per GPU)")
    parser.add_argument("--dry-run", action="store_true", help="print every command; run nothing")
    parser.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="local: a GPU pool on this machine (default); slurm: submit SLURM jobs via submitit",
    )
    parser.add_argument("--partition", help="slurm: the partition to submit to")
    parser.add_argument(
        "--gpus-per-job",
        type=int,
        help="slurm: GPUs per node for each run (default 1; more run train.py through torchrun; 0: CPU only)",
    )
    parser.add_argument(
        "--timeout-min",
        type=int,
        help="slurm: time limit of each job in minutes (default "
        f"{DEFAULT_TIMEOUT_MIN}); a run that needs longer is "
        "requeued and resumes",
    )
    parser.add_argument(
        "--nodes", type=int, help="slurm: nodes per run (default 1; more: multi-node DDP through torchrun's rendezvous)"
    )
    parser.add_argument(
        "--slurm-log-dir",
        help="slurm: where submitit writes its job files and logs (default: <the runs' common directory>/slurm)",
    )


def launch_from_args(jobs: list[Job], args: argparse.Namespace) -> int:
    """Check the options and every job's config (nothing starts unless all are good), then run them."""
    check_executor_options(args)
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    gpus = [gpu.strip() for gpu in args.gpus.split(",") if gpu.strip()] if args.gpus is not None else None
    if gpus is not None and not all(gpu.isdigit() for gpu in gpus):
        raise UserError(f"--gpus takes GPU ids like 0,1,2, got {args.gpus!r}")
    check_jobs(jobs)
    for job in jobs:
        if not is_finished(job.run_dir):  # where it will write: its run directory and its console log
            check_output_dir(job.run_dir, "job")
            check_output_file(job.log_path, f"job {job.run_dir}'s log", make_parents=True)
    for job in jobs:
        try:
            check_terms_combine(load_config(job.config, list(job.overrides)))
        except UserError as error:
            raise UserError(f"job {job.run_dir}: {error}") from None
    if args.executor == "slurm":
        return _submit_to_slurm(jobs, args)
    return run_jobs(jobs, gpus, args.jobs, args.dry_run)


SLURM_ONLY = ("partition", "gpus_per_job", "timeout_min", "nodes", "slurm_log_dir")


def check_executor_options(args: argparse.Namespace) -> None:
    """Each executor's options make sense (or a UserError names the first that does not); fills in the
    slurm defaults."""
    given = [name for name in SLURM_ONLY if getattr(args, name) is not None]
    if args.executor == "local":
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} needs --executor slurm")
        return
    for name in ("gpus", "jobs"):
        if getattr(args, name) is not None:
            raise UserError(f"--{name} is for --executor local; with slurm use --gpus-per-job")
    if args.partition is not None and not args.partition.strip():
        raise UserError("--partition needs a partition name")
    for name, low in (("gpus_per_job", 0), ("timeout_min", 1), ("nodes", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    args.gpus_per_job = 1 if args.gpus_per_job is None else args.gpus_per_job
    args.timeout_min = DEFAULT_TIMEOUT_MIN if args.timeout_min is None else args.timeout_min
    args.nodes = 1 if args.nodes is None else args.nodes
    if args.nodes > 1 and args.gpus_per_job < 1:
        raise UserError("--nodes > 1 needs --gpus-per-job >= 1")
    if not args.dry_run:
        missing = [tool for tool in ("sbatch", "squeue", "srun") if shutil.which(tool) is None]
        if missing:
            raise UserError(f"--executor slurm needs {missing[0]} on PATH (is this a SLURM login node?)")
        try:
            import submitit  # noqa: F401  (only whether it is installed)
        except ImportError:
            raise UserError("--executor slurm needs submitit: pip install -e . (requirements.txt lists it)") from None


def _submit_to_slurm(jobs: list[Job], args: argparse.Namespace) -> int:
    try:
        from scripts import submit_slurm
    except ImportError:  # submitit missing: a dry run still shows the plan's commands
        raise UserError("--executor slurm needs submitit: pip install -e . (requirements.txt lists it)") from None
    return submit_slurm.submit_jobs(jobs, args, is_finished)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_file", help="file of job lines, or - for standard input")
    add_launch_options(parser)
    args = parser.parse_args(argv)
    jobs = [job for job in map(parse_job, read_job_file(args.job_file).splitlines()) if job is not None]
    return launch_from_args(jobs, args)


def read_job_file(name: str) -> str:
    if name != "-" and not Path(name).is_file():
        raise UserError(f"job file not found: {name}")
    try:
        return sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"job file {name} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except OSError as error:
        raise UserError(f"cannot read job file {name}: {error.strerror}") from None


if __name__ == "__main__":
    exit_with(main)
