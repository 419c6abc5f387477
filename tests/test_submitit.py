"""launch.py's executors on one job list: SLURM through submitit against a fake sbatch/squeue on PATH
(what would be submitted, with which dependencies; what a re-run skips and resubmits), the local pool
on a tiny teacher -> student table, and the checkpoint-and-requeue of a running job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.cli import status_of
from scripts import launch, submit_slurm

from conftest import REPO, SMOKE, read_metrics, train_env

ONE_EPOCH = [
    "data.name=synthetic",
    "data.num_train=128",
    "data.num_test=64",
    "data.image_size=16",
    "train.batch_size=64",
    "train.eval_batch_size=64",
    "train.epochs=1",
    "train.milestones=[]",
]

FAKE_SBATCH = """#!{python}
import json, os, sys
record = os.environ["FAKE_SLURM"]
count_path = os.path.join(record, "next_id")
job_id = int(open(count_path).read()) if os.path.exists(count_path) else 100
open(count_path, "w").write(str(job_id + 1))
flags = [line[len("#SBATCH "):].strip() for line in open(sys.argv[-1]) if line.startswith("#SBATCH ")]
with open(os.path.join(record, "sbatch.jsonl"), "a") as out:
    out.write(json.dumps({{"argv": sys.argv[1:], "flags": flags, "id": str(job_id)}}) + "\\n")
print(f"Submitted batch job {{job_id}}")
"""
FAKE_SQUEUE = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM/squeue.args"
cat "$FAKE_SLURM/queue" 2>/dev/null
exit 0
"""


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """A fake SLURM on PATH (sbatch records each submission file's #SBATCH flags); returns (submissions so far,
    set_queue(lines))."""
    bin_dir, record = tmp_path / "bin", tmp_path / "slurm_record"
    bin_dir.mkdir(), record.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(python=sys.executable))
    (bin_dir / "squeue").write_text(FAKE_SQUEUE)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it; nothing runs here
    for tool in ("sbatch", "squeue", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(record))

    def submissions() -> list[dict]:
        path = record / "sbatch.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def set_queue(*lines: str) -> None:
        (record / "queue").write_text("".join(f"{line}\n" for line in lines))

    return submissions, set_queue


def _table(root: Path) -> str:
    """Two teachers, a KD student of each, and a run without a teacher."""
    lines = []
    for teacher in ("t1", "t2"):
        lines.append(f"{root / teacher} configs/quickstart.yaml")
        lines.append(f"--needs {root / teacher} {root / (teacher + '_student')} configs/quickstart.yaml seed=1")
    lines.append(f"{root / 'alone'} configs/quickstart.yaml seed=2")
    return "\n".join(lines) + "\n"


def _launch(capfd, job_file: Path, *args: str, code: int = 0) -> tuple[str, str]:
    returned = status_of(launch.main, [str(job_file), *args])
    out, err = capfd.readouterr()
    assert returned == code, f"exit {returned}:\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


def _finish(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps({"finished": True}))


SLURM_ARGS = ["--executor", "slurm", "--partition", "gpu_p", "--gpus-per-job", "2", "--timeout-min", "90"]


def test_slurm_submits_an_array_then_each_student_after_its_teachers_job(tmp_path, slurm, capfd):
    submissions, set_queue = slurm
    root = tmp_path / "runs"
    job_file = tmp_path / "jobs.txt"
    job_file.write_text(_table(root))
    out, _ = _launch(capfd, job_file, *SLURM_ARGS, "--slurm-log-dir", str(tmp_path / "logs"))
    first, *students = submissions()
    assert len(students) == 2
    for sub in (first, *students):
        assert {"--partition=gpu_p", "--gpus-per-node=2", "--time=90", "--nodes=1", "--signal=USR2@120"} <= set(
            sub["flags"]
        ), sub
    assert "--array=0-2%3" in first["flags"] and not any(f.startswith("--dependency") for f in first["flags"])
    # the array's elements in job-list order: t1, t2, alone
    recorded = {
        name: submit_slurm.recorded_job(root / name) for name in ("t1", "t2", "alone", "t1_student", "t2_student")
    }
    assert recorded["t1"] == "100_0" and recorded["t2"] == "100_1" and recorded["alone"] == "100_2"
    deps = sorted(next(f for f in sub["flags"] if f.startswith("--dependency")) for sub in students)
    assert deps == ["--dependency=afterok:100_0", "--dependency=afterok:100_1"]
    assert all(
        "--kill-on-invalid-dep=yes" in sub["flags"] and not any(f.startswith("--array") for f in sub["flags"])
        for sub in students
    )
    assert {recorded["t1_student"], recorded["t2_student"]} == {"101", "102"}
    assert "job 100_0: " + str(root / "t1") in out and str(tmp_path / "logs") in out
    assert "5 submitted in 3 jobs/arrays" in out

    # Re-run: t1 finished, its student and t2 queued, `alone` failed (gone from the queue), t2's student lost.
    _finish(root / "t1")
    set_queue("100_1 RUNNING", f"{recorded['t1_student']} PENDING", "999 RUNNING")
    again, _ = _launch(capfd, job_file, *SLURM_ARGS, "--slurm-log-dir", str(tmp_path / "logs"))
    new = submissions()[3:]
    assert len(new) == 2, again
    by_kind = {any(f.startswith("--dependency") for f in sub["flags"]): sub for sub in new}
    assert "--dependency=afterok:100_1" in by_kind[True]["flags"]  # t2's student waits on t2's queued job
    assert not any(f.startswith("--array") for f in by_kind[False]["flags"])  # `alone`, alone
    assert submit_slurm.recorded_job(root / "alone") == by_kind[False]["id"]
    assert "# finished: " in again and "# running as job 100_1" in again and "# pending as job" in again
    assert "2 submitted" in again and "1 already finished, 2 queued or running" in again

    # Everything finished or queued: nothing is submitted.
    for name in ("t2", "alone", "t2_student"):
        _finish(root / name)
    nothing, _ = _launch(capfd, job_file, *SLURM_ARGS, "--slurm-log-dir", str(tmp_path / "logs"))
    assert len(submissions()) == 5 and "0 submitted in 0 jobs/arrays" in nothing


def test_slurm_student_of_a_finished_teacher_has_no_dependency_and_dry_run_submits_nothing(tmp_path, slurm, capfd):
    submissions, _ = slurm
    root = tmp_path / "runs"
    _finish(root / "t1")
    job_file = tmp_path / "jobs.txt"
    job_file.write_text(_table(root))
    out, _ = _launch(capfd, job_file, *SLURM_ARGS, "--dry-run")
    assert submissions() == [] and not list(root.glob("*.slurm.json"))
    plan = [line for line in out.splitlines() if line.startswith("sbatch ")]
    assert len(plan) == 2, out
    assert "--array=0-2" in plan[0] and "--dependency" not in plan[0] and "--partition=gpu_p" in plan[0]
    assert plan[1].endswith(f"--dependency=afterok:<job of {root / 't2'}> --kill-on-invalid-dep=yes")
    assert f"# finished: python train.py --config configs/quickstart.yaml --run-dir {root / 't1'}" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--partition", "p"], "--partition needs --executor slurm"),
        (["--executor", "slurm", "--gpus", "0"], "--gpus is for --executor local"),
        (["--executor", "slurm", "--timeout-min", "0"], "--timeout-min must be >= 1, got 0"),
        (["--executor", "slurm", "--gpus-per-job", "-1"], "--gpus-per-job must be >= 0, got -1"),
        (["--executor", "slurm", "--partition", " "], "--partition needs a partition name"),
    ],
)
def test_bad_executor_options_exit_2_before_submitting_anything(args, message, tmp_path, slurm, capfd):
    submissions, _ = slurm
    job_file = tmp_path / "jobs.txt"
    job_file.write_text(_table(tmp_path / "runs"))
    out, err = _launch(capfd, job_file, *args, code=2)
    assert err.strip() == f"error: {message}" or (message in err and len(err.strip().splitlines()) == 1)
    assert out == "" and submissions() == [] and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "where",
    [
        "--slurm-log-dir is a file",
        "--slurm-log-dir is a dangling symlink",
        "a state file links to a run's metrics.json",
    ],
)
def test_slurm_outputs_of_the_wrong_kind_or_over_a_runs_file_are_refused_before_submitting(
    where, tmp_path, slurm, capfd
):
    submissions, _ = slurm
    job_file, run = tmp_path / "jobs.txt", tmp_path / "finished"
    job_file.write_text(_table(tmp_path / "runs"))
    _finish(run)
    (run / "config.yaml").write_text("the run's config")
    log_dir = tmp_path / "slurm_logs"
    if where.endswith("is a file"):
        log_dir.write_text("keep me")
        message = f"--slurm-log-dir {log_dir} is a file, not a directory"
    elif where.endswith("dangling symlink"):
        log_dir.symlink_to(tmp_path / "nowhere")
        message = f"--slurm-log-dir {log_dir} is a symlink to {tmp_path / 'nowhere'}, which does not exist"
    else:
        (tmp_path / "runs").mkdir()
        state = tmp_path / "runs" / "t1.slurm.json"
        state.symlink_to(run / "metrics.json")
        message = f"job {tmp_path / 'runs' / 't1'}: its SLURM state file {state} (a link to {run / 'metrics.json'})"
    out, err = _launch(capfd, job_file, *SLURM_ARGS, "--slurm-log-dir", str(log_dir), code=2)
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    assert submissions() == [] and json.loads((run / "metrics.json").read_text()) == {"finished": True}


def test_slurm_without_sbatch_is_one_error_line(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("PATH", str(tmp_path))
    job_file = tmp_path / "jobs.txt"
    job_file.write_text(_table(tmp_path / "runs"))
    _, err = _launch(capfd, job_file, "--executor", "slurm", code=2)
    assert err.strip() == "error: --executor slurm needs sbatch on PATH (is this a SLURM login node?)"


def test_local_executor_runs_a_teacher_then_its_student_and_a_rerun_runs_nothing(tmp_path, capfd, monkeypatch):
    for key, value in train_env().items():
        monkeypatch.setenv(key, value)
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    job_file = tmp_path / "jobs.txt"
    overrides = " ".join(ONE_EPOCH)
    job_file.write_text(
        f"--needs {teacher} {student} configs/quickstart.yaml {overrides} seed=1\n"
        f"{teacher} configs/quickstart.yaml {overrides}\n"
    )
    out, _ = _launch(capfd, job_file, "--executor", "local", "--gpus=", "--jobs", "2")
    assert read_metrics(teacher)["finished"] and read_metrics(student)["finished"]
    # The student's run began (config.yaml) after the teacher's last write (metrics.json: finished); the
    # pool starts it as soon as metrics.json says so, possibly before the teacher's process has exited.
    assert (student / "config.yaml").stat().st_mtime >= (teacher / "metrics.json").stat().st_mtime, out
    again, _ = _launch(capfd, job_file, "--gpus=")
    assert "2 already finished, 0 to run" in again and "started" not in again


def test_a_checkpointed_job_stops_train_py_which_saves_and_the_requeued_job_resumes(tmp_path, monkeypatch):
    """What submitit does at a time limit: call checkpoint() (train.py gets SIGTERM, saves last.pt), pickle
    the returned submission, and run it again in the requeued job."""
    import cloudpickle

    for key, value in train_env().items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / "run"
    job = launch.Job(
        run_dir,
        str(REPO / "configs/quickstart.yaml"),
        (*SMOKE, "data.num_train=1024", "train.epochs=2", "train.log_interval=1"),
    )
    function = submit_slurm.TrainJob(sys.executable, job.command()[1:], str(REPO), str(job.log_path), gpus=1)
    errors = []
    thread = threading.Thread(target=lambda: _call(function, errors))
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline and "epoch 1/2" not in (job.log_path.read_text() if job.log_path.exists() else ""):
        time.sleep(0.2)
    requeued = function.checkpoint()
    thread.join(60)
    assert not thread.is_alive() and errors and "exited with status" in str(errors[0])
    stopped = read_metrics(run_dir)
    assert not stopped["finished"] and stopped["epochs_done"] == 1 and stopped["stopped_by"] == "SIGTERM"
    again = cloudpickle.loads(cloudpickle.dumps(requeued))
    assert again.function is not function and again.function._process is None
    again.result()
    resumed = read_metrics(run_dir)
    assert resumed["finished"] and resumed["epochs_done"] == 2
    headers = [line for line in job.log_path.read_text().splitlines() if line.startswith("run directory: ")]
    assert len(headers) >= 2 and headers[0].endswith("(fresh)") and "(fresh)" not in headers[1], headers


def _call(function, errors: list) -> None:
    try:
        function()
    except RuntimeError as error:
        errors.append(error)


def test_sweep_and_reproduce_take_the_executor_options(tmp_path, slurm, capfd):
    from scripts import sweep

    submissions, _ = slurm
    root = tmp_path / "sweep"
    returned = status_of(
        sweep.main,
        [
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            "--root",
            str(root),
            "--grid",
            "train.lr=0.1,0.2",
            *SLURM_ARGS,
        ],
    )
    out, _ = capfd.readouterr()
    assert returned == 0, out
    (array,) = submissions()
    assert "--array=0-1%2" in array["flags"] and "--partition=gpu_p" in array["flags"]
    assert submit_slurm.recorded_job(root / "train.lr=0.1" / "seed0") == f"{array['id']}_0"
    assert (root / "slurm").is_dir()  # submitit's files beside the sweep's runs
    rejected = subprocess.run(
        [
            "bash",
            str(REPO / "scripts/reproduce_cifar100.sh"),
            "--root",
            str(tmp_path / "t"),
            "--executor",
            "slurm",
            "--timeout-min",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=sys.executable),
        timeout=120,
    )
    assert rejected.returncode == 2 and rejected.stdout == ""
    assert rejected.stderr.strip() == "error: --timeout-min must be >= 1, got 0"
