"""The scripts end to end on synthetic data with one-epoch runs: train a teacher, distil a student with
KD + Tf-FD from its checkpoint, evaluate, sweep, collect the table; the reproduction matrix (dry run)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.typed_config import to_dict
from engine.cli import status_of
from engine.config import load_config
from scripts import collect_results, sweep
from scripts import evaluate as evaluate_script

from conftest import REPO, SMOKE, fake_run, read_metrics, run_train, train_env

ONE_EPOCH = [*SMOKE, "data.num_train=256", "data.num_test=128", "train.epochs=1"]
STUDENTS = {
    "resnet20": "resnet110",
    "resnet32": "resnet110",
    "wrn_16_2": "wrn_40_2",
    "resnet8x4": "resnet32x4",
    "vgg8": "vgg13",
    "wrn_40_1": "wrn_40_2",
}
ROWS = ("ce", "tffd", "kd", "kd_tffd")
# the IJCNN version's method + Tf-FD rows: TFD† (+ label smoothing) for its four students, ResNet-32's others
IJCNN_ROWS = {f"{student}_label_smoothing_tffd" for student in ("resnet20", "resnet32", "wrn_16_2", "wrn_40_1")} | {
    "resnet32_cutout_tffd",
    "resnet32_autoaugment_tffd",
}


def run_script(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A shell script in its own process (it starts launch.py and train.py as processes of their own)."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / script), *args],
        cwd=REPO,
        env=dict(train_env(), PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def call(main, capfd, *args: str, code: int = 0) -> tuple[str, str]:
    """A script's main() in this process (no interpreter start-up); its exit code, stdout and stderr."""
    returned = status_of(main, list(args))
    out, err = capfd.readouterr()
    assert returned == code, f"exit {returned}:\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A resnet110 teacher trained from its CE config, and a resnet20 distilled from its best.pt with KD+Tf-FD."""
    root = tmp_path_factory.mktemp("table")
    teacher = root / "resnet110_ce"
    run_train(*ONE_EPOCH, "--run-dir", str(teacher), config="configs/cifar100/resnet110_ce.yaml", check=True)
    student = root / "resnet20_kd_tffd" / "seed0"
    result = run_train(
        *ONE_EPOCH,
        f"teacher.checkpoint={teacher / 'best.pt'}",
        "--run-dir",
        str(student),
        config="configs/cifar100/resnet20_kd_tffd.yaml",
        check=True,
    )
    return root, teacher, student, result


def test_student_distils_from_the_teacher_checkpoint(distilled):
    _, teacher, student, result = distilled
    metrics = read_metrics(student)
    assert metrics["finished"]
    # Evaluated once at the start, the loaded teacher scores exactly what its own run measured.
    assert metrics["teacher_acc1"] == pytest.approx(read_metrics(teacher)["best_acc1"], abs=1e-9)
    assert "teacher resnet110: test top-1" in result.stdout
    epoch = metrics["history"][-1]
    assert epoch["train_kd"] > 0 and epoch["train_tffd_inter"] > 0 and epoch["train_tffd_intra"] > 0
    saved = yaml.safe_load((student / "config.yaml").read_text())
    assert saved["teacher"] == {"model": "resnet110", "checkpoint": str(teacher / "best.pt")}


def test_evaluate_reproduces_a_checkpoints_test_accuracy(distilled, capfd):
    _, teacher, _, _ = distilled
    result = json.loads(call(evaluate_script.main, capfd, str(teacher / "best.pt"), "--json")[0])
    metrics = read_metrics(teacher)
    assert result["model"] == "resnet110" and result["images"] == metrics["test_samples"] == 128
    assert result["acc1"] == pytest.approx(metrics["best_acc1"], abs=1e-9)
    assert result["acc5"] == pytest.approx(metrics["history"][metrics["best_epoch"] - 1]["test_acc5"], abs=1e-9)


def test_evaluate_rejects_a_checkpoint_of_another_class_count(distilled, capfd):
    _, teacher, _, _ = distilled
    _, err = call(evaluate_script.main, capfd, str(teacher / "best.pt"), "data.num_classes=7", code=2)
    assert err.strip() == f"error: checkpoint {teacher / 'best.pt'} was trained for 10 classes, but the dataset has 7"


def test_collect_results_tabulates_the_runs(distilled, tmp_path, capfd):
    root, teacher, student, _ = distilled
    csv_path = tmp_path / "table.csv"
    out, _ = call(collect_results.main, capfd, str(root), "--csv", str(csv_path))
    t, s = read_metrics(teacher), read_metrics(student)
    assert re.search(rf"\| resnet110 \| Baseline \|.*\| {t['last_acc1']:.2f} \| {t['best_acc1']:.2f} \|", out), out
    assert re.search(
        rf"\| resnet20 \| KD\+Tf-FD \| resnet110 \({s['teacher_acc1']:.2f}\) \|"
        rf".*\| {s['last_acc1']:.2f} \| {s['best_acc1']:.2f} \|.*\| 1/1 finished \|",
        out,
    ), out
    assert "last-epoch" in out and "best-epoch" in out
    rows = {row["method"]: row for row in csv.DictReader(csv_path.open())}
    assert float(rows["KD+Tf-FD"]["last_mean"]) == pytest.approx(s["last_acc1"])
    assert float(rows["Baseline"]["best_mean"]) == pytest.approx(t["best_acc1"])


@pytest.mark.parametrize(
    "damage, problem",
    [
        (b"[1, 2]", "a JSON list, not an object"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b'{"best', "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nested too"),
        (b'{"best_acc1": "69.5", "last_acc1": 69.0, "finished": true}', "best_acc1: '69.5' is not a number"),
        (b'{"epochs_done": 2.5}', "epochs_done: 2.5 is not an integer"),
        (b'{"finished": "yes"}', "finished: 'yes' is not true or false"),
        (b'{"finished": true, "history": {"epoch": 1}}', "history: {'epoch': 1} is not a list"),
        (b'{"finished": true, "history": [[1, 2]]}', "history[0]: [1, 2] is not an object"),
        (
            b'{"finished": true, "history": [{"epoch": 1, "test_acc1": [' + b"9, " * 10_000 + b"9]}]}",
            "history[0].test_acc1: [9, 9, 9, 9, 9, 9, ...] is not a number",
        ),
    ],
)
def test_collect_results_warns_about_and_skips_a_damaged_metrics_file(tmp_path, capfd, damage, problem):
    good, bad = tmp_path / "resnet20_ce" / "seed0", tmp_path / "resnet20_ce" / "seed1"
    for seed, run_dir in enumerate((good, bad)):
        fake_run(run_dir, "configs/cifar100/resnet20_ce.yaml", [f"seed={seed}"], 69.0, 69.5)
    (bad / "metrics.json").write_bytes(damage)
    out, err = call(collect_results.main, capfd, str(tmp_path))
    assert len(err.splitlines()) == 1
    assert err.startswith(f"warning: skipping {bad}: {bad / 'metrics.json'} is damaged ({problem}")
    assert "| resnet20 | Baseline |" in out and "1/1 finished" in out


@pytest.mark.parametrize(
    "text, problem",
    [
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
            "holds 490329064 values",
        ),
        ("seed: " + "[" * 100_000 + "]" * 100_000 + "\n", "is nested more than 32 levels deep"),
    ],
)
def test_collect_results_reads_config_yaml_through_the_bounded_loader(tmp_path, capfd, text, problem):
    good, bad = tmp_path / "resnet20_ce" / "seed0", tmp_path / "resnet20_ce" / "seed1"
    for seed, run_dir in enumerate((good, bad)):
        fake_run(run_dir, "configs/cifar100/resnet20_ce.yaml", [f"seed={seed}"], 69.0, 69.5)
    (bad / "config.yaml").write_text(text)
    out, err = call(collect_results.main, capfd, str(tmp_path))
    assert len(err.splitlines()) == 1 and len(err) < 400, err[:1000]
    assert err.startswith(f"warning: skipping {bad}: unreadable config.yaml") and problem in err
    assert "| resnet20 | Baseline |" in out and "1/1 finished" in out


def test_collect_results_on_a_partial_cifar100_table(tmp_path, capfd):
    kd_protocol = ["train.batch_size=64", "train.lr=0.05"]
    lasts, bests = [69.0, 69.4, 68.8], [69.3, 69.5, 69.1]
    for seed, (last, best) in enumerate(zip(lasts, bests)):
        fake_run(
            tmp_path / "resnet20_ce" / f"seed{seed}",
            "configs/cifar100/resnet20_ce.yaml",
            [f"seed={seed}", *kd_protocol],
            last,
            best,
        )
    fake_run(tmp_path / "resnet20_kd" / "seed0", "configs/cifar100/resnet20_kd.yaml", ["seed=0"], 70.9, 71.0)
    fake_run(
        tmp_path / "resnet20_kd" / "seed1", "configs/cifar100/resnet20_kd.yaml", ["seed=1"], 50.0, 55.0, epochs_done=17
    )
    out, _ = call(collect_results.main, capfd, str(tmp_path))
    lines = {
        tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in out.splitlines() if line.startswith("| ")
    }
    baseline = lines[("resnet20", "Baseline")]
    mean_last, mean_best = statistics.fmean(lasts), statistics.fmean(bests)
    assert (
        f"| {mean_last:.2f} ± {statistics.stdev(lasts):.2f} | {mean_best:.2f} ± {statistics.stdev(bests):.2f} |"
        in baseline
    )
    assert f"| 69.06 | {mean_last - 69.06:+.2f} | {mean_best - 69.06:+.2f} | none | 3/3 finished |" in baseline
    assert "batch 64, lr 0.05, 240 ep" in baseline
    kd = lines[("resnet20", "KD")]  # the unfinished seed is marked, not averaged
    assert "| 70.90 | 71.00 | 70.67 | +0.23 | +0.33 | none | 1/2 finished; seed 1: epoch 17/240 |" in kd
    assert "missing" in lines[("resnet20", "Tf-FD")] and "| 70.62 |" in lines[("resnet20", "Tf-FD")]
    assert "| 70.56 [1] | missing |" in lines[("resnet20", "Tf-FD")]  # the IJCNN version's, no runs to compare
    assert "missing" in lines[("vgg8", "KD+Tf-FD")] and "missing" in lines[("resnet110", "Baseline")]
    # WRN-40-1's baseline and KD from the KD benchmark; its Tf-FD rows the IJCNN version's only
    assert "| 71.98 |" in lines[("wrn_40_1", "Baseline")] and "| 73.54 |" in lines[("wrn_40_1", "KD")]
    assert re.search(r"\| – \| – \| – \| 73\.08 \[\d\]; 73\.09 \[\d\] \| missing \|$", lines[("wrn_40_1", "Tf-FD")])
    assert "paper: CRD benchmark README (HobbitLong/RepDistiller" in out
    assert len([line for line in lines.values() if "missing" in line]) == 4 + (5 * 4 + 2) + 2 - 2


def test_sweep_runs_a_grid_skips_finished_points_and_feeds_the_hparams_tab(tmp_path, capfd):
    root = tmp_path / "sweep"
    args = [
        "--config",
        "configs/cifar100/resnet20_tffd.yaml",
        "--grid",
        "loss.tffd.lambda_intra=1e-4,8e-4",
        "--root",
        str(root),
        "--gpus=",
        "--jobs",
        "2",
        *ONE_EPOCH,
    ]
    first, _ = call(sweep.main, capfd, *args)
    points = [root / f"loss.tffd.lambda_intra={value}" / "seed0" for value in ("1e-4", "8e-4")]
    assert all(read_metrics(point)["finished"] for point in points), first
    assert first.count(" finished ") == 2
    again, _ = call(sweep.main, capfd, *args)
    assert "2 already finished, 0 to run" in again and "started" not in again

    grid, _ = call(collect_results.main, capfd, str(root))
    assert "#### resnet20 Tf-FD on synthetic: top-1 (%)" in grid
    assert "| loss.tffd.lambda_intra | last-epoch top-1 | best-epoch top-1 |" in grid
    for point, value in zip(points, ("0.0001", "0.0008")):
        metrics = read_metrics(point)
        assert f"| {value} | {metrics['last_acc1']:.2f} | {metrics['best_acc1']:.2f} |" in grid, grid
        hparams = _hparams(point)
        assert hparams["loss.tffd.lambda_intra"] == pytest.approx(float(value))
        assert hparams["loss.terms"] == "['ce', 'tffd']"


def _hparams(run_dir: Path) -> dict:
    """The hyper-parameters TensorBoard's HParams tab shows for a run (its session start info)."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventMultiplexer()
    events.AddRunsFromDirectory(str(run_dir))
    events.Reload()
    content = events.PluginRunToTagToContent("hparams")["."]
    assert "_hparams_/experiment" in content and "_hparams_/session_end_info" in content
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    return {key: value.string_value or value.number_value for key, value in start.session_start_info.hparams.items()}


def _dry_run_commands(*args: str) -> tuple[list[str], str]:
    out = run_script("reproduce_cifar100.sh", "--dry-run", *args).stdout
    return [line for line in out.splitlines() if re.match(r"(# finished: )?python train\.py ", line)], out


def _arg(command: str, flag: str) -> str:
    return command.split(f"{flag} ")[1].split()[0]


def _resolved(command: str):
    """The config a dry-run command line would train with: its config file and overrides, loaded."""
    words = shlex.split(command.removeprefix("# finished: ").split("  # ")[0])
    overrides = words[words.index("--config") + 2 : words.index("--run-dir")]
    return load_config(REPO / _arg(command, "--config"), overrides)


def _protocol(config) -> tuple:
    """The keys the two Tf-FD protocols set (configs/_base_/protocols/), as a tuple."""
    return (
        config.train.batch_size,
        config.train.lr,
        config.train.nesterov,
        config.data.pad_mode,
        config.loss.tffd.lambda_inter,
        config.loss.tffd.lambda_intra,
    )


PAPER = (64, 0.05, False, "constant", 5e-3, 4e-4)  # the CRD benchmark's training, lambdas 5e-3 / 4e-4


def test_reproduce_dry_run_lists_the_full_matrix(tmp_path):
    commands, out = _dry_run_commands("--root", str(tmp_path))
    assert len(commands) == 4 + (6 * 4 + 6) * 3 and "94 runs: 94 to run" in out
    run_dirs = [_arg(command, "--run-dir") for command in commands]
    assert len(set(run_dirs)) == len(run_dirs)
    assert run_dirs[:4] == [f"{tmp_path}/{teacher}_ce" for teacher in ("resnet110", "wrn_40_2", "resnet32x4", "vgg13")]
    matrix, ijcnn = set(), set()
    for command, run_dir in zip(commands, run_dirs):
        config = _arg(command, "--config")
        assert (REPO / config).is_file(), config
        assert _protocol(_resolved(command)) == PAPER, command  # every row by default, the teachers too
        if run_dir in run_dirs[:4]:
            continue
        name, seed = Path(config).stem, int(command.split(" seed=")[1].split()[0])
        if name in IJCNN_ROWS:  # their configs set the IJCNN version's protocol themselves
            assert run_dir == f"{tmp_path}/{name}/seed{seed}" and "train.batch_size" not in command
            assert load_config(REPO / config).train.batch_size == 64
            ijcnn.add((name, seed))
            continue
        student, row = re.match(r"configs/cifar100/(\w+?)_(ce|tffd|kd|kd_tffd)\.yaml", config).groups()
        seed = int(command.split(" seed=")[1].split()[0])
        assert run_dir == f"{tmp_path}/{student}_{row}/seed{seed}"
        matrix.add((student, row, seed))
        teacher_dir = f"{tmp_path}/{STUDENTS[student]}_ce"
        if row.startswith("kd"):
            assert f"teacher.checkpoint={teacher_dir}/best.pt" in command and command.endswith(f"# after {teacher_dir}")
        else:
            assert "teacher.checkpoint" not in command
    assert matrix == {(student, row, seed) for student in STUDENTS for row in ROWS for seed in (0, 1, 2)}
    assert ijcnn == {(name, seed) for name in IJCNN_ROWS for seed in (0, 1, 2)}


def test_reproduce_trains_the_tffd_row_under_the_released_protocol_on_request(tmp_path):
    paper, _ = _dry_run_commands("--root", str(tmp_path), "--seeds", "0")
    released, out = _dry_run_commands("--root", str(tmp_path), "--seeds", "0", "--tffd-protocol", "released")
    assert len(released) == len(paper) == 4 + len(STUDENTS) * 4 + len(IJCNN_ROWS) and "34 runs: 34 to run" in out
    changed = [(ours, theirs) for ours, theirs in zip(paper, released) if ours != theirs]
    assert len(changed) == len(STUDENTS)  # the Tf-FD row of each student, nothing else
    for ours, theirs in changed:
        student = re.match(r".*configs/cifar100/(\w+?)_tffd\.yaml", ours).group(1)
        assert _arg(theirs, "--config") == f"configs/cifar100/{student}_tffd_released.yaml"
        assert _arg(theirs, "--run-dir") == f"{tmp_path}/{student}_tffd_released/seed0"
        lambdas = (5e-4, 8e-4) if student == "resnet20" else (5e-3, 4e-4)  # the README's command for ResNet-20
        assert _protocol(_resolved(theirs)) == (128, 0.1, True, "reflect", *lambdas)
        assert _protocol(_resolved(ours)) == PAPER


def test_reproduce_skips_finished_runs_and_compresses_a_quick_pass(tmp_path):
    finished = tmp_path / "resnet20_kd" / "seed0"
    finished.mkdir(parents=True)
    (finished / "metrics.json").write_text(json.dumps({"finished": True, "best_acc1": 1.0}))
    commands, out = _dry_run_commands("--root", str(tmp_path), "--seeds", "0", "--epochs", "2")
    assert len(commands) == 4 + 6 * 4 + 6 and "34 runs: 33 to run, 1 already finished" in out
    skipped = [command for command in commands if command.startswith("# finished: ")]
    assert len(skipped) == 1 and skipped[0].endswith(f"--run-dir {finished}  # after {tmp_path}/resnet110_ce")
    assert all("train.epochs=2 'train.milestones=[1]' loss.tffd.warmup_epochs=0" in c for c in commands)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "zero"], "error: --seeds takes a list like 0,1,2, got 'zero'"),
        (["--epochs", "-3"], "error: --epochs takes a positive integer, got '-3'"),
        (["--tffd-protocol", "eccv"], "error: --tffd-protocol takes paper or released, got 'eccv'"),
        (["--tffd-protocol"], "error: --tffd-protocol needs a value"),
        (["--jobs", "0"], "error: --jobs must be >= 1, got 0"),
        (["--gpus", "0,x"], "error: --gpus takes GPU ids like 0,1,2, got '0,x'"),
        (["--set", "train.lr=nan"], "train.lr must be a finite number, got nan"),
        (["--set", "train.lrr=0.1"], "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
        (["--set", "loss.tffd.lambda_intra=-1"], "loss.tffd.lambda_intra must be >= 0, got -1"),
        (["--set", "loss.terms=[ce,dlb,cs_kd]"], "(loss.dlb needs last_batch, loss.cs_kd needs class_pairs)"),
        (["--set", "train.lr=0.1", "--set", " train.lr=0.2"], "--set ' train.lr=0.2': train.lr is set already"),
        (["--set", "seed=3"], "--set 'seed=3': seed is set already"),
        (["--epochs", "2", "--set", "loss.tffd.warmup_epochs=1"], "loss.tffd.warmup_epochs is set already"),
    ],
)
def test_reproduce_rejects_bad_options_before_launching_anything(args, message, tmp_path):
    _assert_rejected("reproduce_cifar100.sh", ["--root", str(tmp_path / "table"), *args], message, tmp_path / "table")


def _assert_rejected(script: str, args: list[str], message: str, root: Path) -> None:
    """The script exits 2 with one error line containing ``message``, printing and writing nothing else."""
    result = run_script(script, *args, check=False)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and message in result.stderr
    assert result.stdout == "" and not root.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grid", "train.lr=0.1,nan"], "train.lr must be a finite number, got nan"),
        (["--grid", "train.momentum=0.9,1.0"], "train.momentum must be < 1, got 1"),
        (["--grid", "seed=0,1", "--seeds", "0,1"], "--grid seed=... and --seeds both set the seed"),
        (["--grid", "train.epochs=1", "--jobs", "0"], "--jobs must be >= 1, got 0"),
        (["--grid", "train.epochs=1", "--seeds", "a,b"], "--seeds takes a list like 0,1,2, got 'a,b'"),
        (["--grid", "train.epochs=1", "--gpus", "junk"], "--gpus takes GPU ids like 0,1,2, got 'junk'"),
        (
            ["--grid", "loss.tffd.lambda_intra=1e-4,4e-4", "--grid", " loss.tffd.lambda_intra=8e-4"],
            "--grid names loss.tffd.lambda_intra twice",
        ),
        (["--grid", "train.lr=0.1", "--grid", "train.lr=0.2"], "--grid names train.lr twice"),
        (["--grid", "train.lr=0.1,0.05,0.1"], "--grid train.lr lists 0.1 twice"),
        (["--grid", "loss.terms=[ce,dlb],[ce,dlb,cs_kd]"], "(loss.dlb needs last_batch, loss.cs_kd needs class_pairs)"),
        (
            ["--grid", "batch.transforms=[mixup],[cutmix]", "loss.terms=[ce,mixskd]"],
            "batch plan mix_pairs (loss.mixskd needs it) pairs the images of its batch, and batch.transforms ['mixup']",
        ),
    ],
)
def test_sweep_rejects_bad_grids_before_launching_anything(args, message, tmp_path, capfd):
    root = tmp_path / "sweep"
    _, err = call(
        sweep.main, capfd, "--config", str(REPO / "configs/quickstart.yaml"), "--root", str(root), *args, code=2
    )
    assert err.strip().splitlines() == [err.strip()] and message in err
    assert not root.exists()


def test_a_seed_axis_in_the_grid_is_the_only_seed(tmp_path, capfd):
    out, _ = call(
        sweep.main,
        capfd,
        "--config",
        str(REPO / "configs/quickstart.yaml"),
        "--root",
        str(tmp_path),
        "--grid",
        "seed=3,4",
        "--dry-run",
    )
    commands = [line for line in out.splitlines() if line.startswith("python train.py")]
    assert len(commands) == 2 and all(command.count(" seed=") == 1 for command in commands), out
    assert " seed=3 " in f"{commands[0]} " and " seed=4 " in f"{commands[1]} "


def test_launch_blocks_a_job_whose_teacher_has_not_finished(tmp_path, monkeypatch, capfd):
    from scripts import launch

    student = tmp_path / "student"
    monkeypatch.setattr(
        sys, "stdin", io.StringIO(f"--needs {tmp_path / 'teacher'} {student} configs/cifar100/resnet20_kd.yaml\n")
    )
    out, _ = call(launch.main, capfd, "-", "--gpus=", code=1)
    assert f"BLOCKED {student}: needs the finished run {tmp_path / 'teacher'}" in out
    assert not student.exists() and not os.path.exists(f"{student}.log")


# ---------------------------------------------------------------- what the scripts write, and where
@pytest.fixture
def finished_run(tmp_path) -> Path:
    """A finished run with every file a run writes, under tmp_path/runs."""
    run = tmp_path / "runs" / "resnet20_ce" / "seed0"
    fake_run(run, "configs/cifar100/resnet20_ce.yaml", [], 69.0, 69.5)
    for name in ("best.pt", "last.pt", "log.txt", "events.out.tfevents.1.host.1", ".lock"):
        (run / name).write_bytes(f"the run's {name}".encode())
    return run


def _contents(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def _tree(root: Path) -> list[str]:
    return sorted(str(path) for path in root.rglob("*"))


@pytest.mark.parametrize(
    "option, name",
    [
        ("--out", "metrics.json"),
        ("--out", "best.pt"),
        ("--csv", "config.yaml"),
        ("--csv", "last.pt"),
        ("--out", "log.txt"),
        ("--csv", ".lock"),
        ("--out", "events.out.tfevents.1.host.1"),
    ],
)
@pytest.mark.parametrize("through_a_link", [False, True])
def test_collect_results_never_writes_over_a_runs_file(finished_run, tmp_path, capfd, option, name, through_a_link):
    path = finished_run / name
    if through_a_link:
        (tmp_path / "table.md").symlink_to(path)
        path = tmp_path / "table.md"
    before = _contents(finished_run)
    _, err = call(collect_results.main, capfd, str(tmp_path / "runs"), option, str(path), code=2)
    assert err.startswith(f"error: {option} {path}") and len(err.splitlines()) == 1, err
    assert f"is the run's {name} in {finished_run}, which only that run writes" in err
    assert _contents(finished_run) == before


def test_collect_results_plots_never_write_through_a_link_to_a_runs_file(finished_run, tmp_path, capfd):
    first = tmp_path / "first"  # the bars beside the paper's numbers
    call(collect_results.main, capfd, str(tmp_path / "runs"), "--plots", str(first))
    figure = sorted(first.iterdir())[0].name
    second = tmp_path / "second"
    second.mkdir()
    (second / figure).symlink_to(finished_run / "best.pt")
    before = _contents(finished_run)
    _, err = call(collect_results.main, capfd, str(tmp_path / "runs"), "--plots", str(second), code=2)
    assert err.startswith(
        f"error: --plots {second / figure} (a link to {finished_run / 'best.pt'}) is the run's best.pt"
    ), err
    assert _contents(finished_run) == before and [path.name for path in second.iterdir()] == [figure]


def test_launch_never_writes_a_log_through_a_link_to_a_runs_file(finished_run, tmp_path, capfd):
    from scripts import launch

    job_file = tmp_path / "jobs.txt"
    job_file.write_text(f"{tmp_path / 'job'} configs/quickstart.yaml\n")
    (tmp_path / "job.log").symlink_to(finished_run / "last.pt")
    _, err = call(launch.main, capfd, str(job_file), "--gpus=", code=2)
    assert err.startswith(
        f"error: job {tmp_path / 'job'}'s log {tmp_path / 'job.log'} (a link to "
        f"{finished_run / 'last.pt'}) is the run's last.pt"
    ), err
    assert (finished_run / "last.pt").read_bytes() == b"the run's last.pt" and not (tmp_path / "job").exists()


def _odd(tmp_path: Path, kind: str, name: str = "odd") -> Path:
    """tmp_path / name, made ``kind``: a file, a directory, a dangling symlink or a symlink loop."""
    path = tmp_path / name
    if kind == "a file":
        path.write_text("keep me")
    elif kind == "a directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "nowhere" if kind == "a dangling symlink" else path)
    return path


PATH_PROBLEMS = {
    "a file": "is a file, not a directory",
    "a directory": "is a directory; name a file",
    "a dangling symlink": "which does not exist",
    "a symlink loop": "leads into a symlink loop",
}


@pytest.mark.parametrize(
    "where, kind",
    [
        ("collect ROOT", "a file"),
        ("collect ROOT", "a dangling symlink"),
        ("collect ROOT", "a symlink loop"),
        ("collect --out", "a directory"),
        ("collect --out", "a dangling symlink"),
        ("collect --csv", "a symlink loop"),
        ("collect --plots", "a file"),
        ("collect --plots", "a dangling symlink"),
        ("collect --plots", "a symlink loop"),
        ("sweep --root", "a file"),
        ("sweep --root", "a dangling symlink"),
        ("sweep --root", "a symlink loop"),
        ("launch run dir", "a file"),
        ("launch run dir", "a dangling symlink"),
        ("launch log", "a directory"),
        ("launch log", "a symlink loop"),
    ],
)
def test_an_output_path_of_the_wrong_kind_is_one_line_naming_it_before_anything_is_written(
    where, kind, finished_run, tmp_path, capfd
):
    from scripts import launch

    path = _odd(tmp_path, kind, "odd.log")
    script, option = where.split(" ", 1)
    if script == "collect":
        args = [str(path)] if option == "ROOT" else [str(tmp_path / "runs"), option, str(path)]
        main, shown = collect_results.main, f"{option} {path}"
    elif script == "sweep":
        main, shown = sweep.main, f"--root {path}"
        args = ["--config", str(REPO / "configs/quickstart.yaml"), "--grid", "train.lr=0.1,0.2", "--root", str(path)]
    else:
        run_dir = path if option == "run dir" else path.with_suffix("")
        (tmp_path / "jobs.txt").write_text(f"{run_dir} configs/quickstart.yaml\n")
        main, args = launch.main, [str(tmp_path / "jobs.txt"), "--gpus="]
        shown = f"job {path}" if option == "run dir" else f"job {run_dir}'s log {path}"
    before = _tree(tmp_path)
    _, err = call(main, capfd, *args, code=2)
    assert err.startswith(f"error: {shown} ") and PATH_PROBLEMS[kind] in err and len(err.splitlines()) == 1, err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    "script, kind",
    [
        ("reproduce_cifar100.sh", "a file"),
        ("reproduce_selfkd.sh", "a dangling symlink"),
        ("reproduce_selfkd.sh", "a symlink loop"),
    ],
)
def test_reproduce_refuses_a_root_of_the_wrong_kind_before_launching_anything(script, kind, tmp_path):
    root = _odd(tmp_path, kind)
    result = run_script(script, "--root", str(root), "--dry-run", check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: job {root}/") and PATH_PROBLEMS[kind] in result.stderr
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("finishes", [True, False])
def test_a_relaunch_watches_a_run_that_another_live_process_holds_as_running(finishes, tmp_path, capfd, monkeypatch):
    """A launcher killed and relaunched while its runs go on: the run's lock is held, so the relaunch
    waits for that process instead of starting the run again and calling it failed; if that process ends
    without finishing the run, the relaunch resumes it."""
    import threading

    from engine.run_dir import RunLock
    from scripts import launch

    run_dir = tmp_path / "run"
    fake_run(run_dir, "configs/quickstart.yaml", [], None, None, epochs_done=1)
    done = {**read_metrics(run_dir), "finished": True, "best_acc1": 61.0, "last_acc1": 60.0, "best_epoch": 2}
    lock = RunLock(run_dir)
    lock.acquire()
    job = launch.Job(run_dir, "configs/quickstart.yaml")
    started = []

    def start_here(job, gpu):  # stands for train.py resuming the run: it finishes it
        started.append(job)
        return subprocess.Popen(
            [sys.executable, "-c", f"open({str(run_dir / 'metrics.json')!r}, 'w').write({json.dumps(done)!r})"]
        )

    monkeypatch.setattr(launch, "_start", start_here)
    assert launch.run_jobs([job], gpus=[], dry_run=True) == 0
    holder = f"{socket.gethostname()} pid {os.getpid()}"
    assert capfd.readouterr().out.startswith(f"# running in another process ({holder}): python train.py ")

    def other_process_ends():
        if finishes:
            (run_dir / "metrics.json").write_text(json.dumps(done))
        lock.release()

    threading.Timer(1.0, other_process_ends).start()
    code = launch.run_jobs([job], gpus=[])
    out, _ = capfd.readouterr()
    assert code == 0 and "FAILED" not in out, out
    assert f"[1/1] running in another process ({holder}): {run_dir}; waiting for it" in out
    if finishes:
        assert f"[1/1] finished {run_dir} in another process: best top-1 61.00%" in out and not started
    else:
        assert f"[1/1] {run_dir} was left unfinished by the other process; resuming it here" in out
        assert started == [job] and f"[1/1] finished {run_dir} in " in out
    assert "1 runs: 1 finished, 0 failed, 0 blocked" in out


def test_a_run_whose_lock_another_process_takes_first_is_running_not_failed(tmp_path, capfd, monkeypatch):
    """The other process takes the lock between the launcher's look and train.py's start: train.py
    refuses (exit 2), and the launcher watches that process's run instead of calling it failed."""
    import threading

    from scripts import launch

    run_dir = tmp_path / "run"
    fake_run(run_dir, "configs/quickstart.yaml", [], None, None, epochs_done=1)
    done = {**read_metrics(run_dir), "finished": True, "best_acc1": 61.0, "last_acc1": 60.0, "best_epoch": 2}
    held = []

    def other_process_finishes():
        (run_dir / "metrics.json").write_text(json.dumps(done))
        held.clear()

    def start_here(job, gpu):
        held.append("otherhost pid 7")
        threading.Timer(1.0, other_process_finishes).start()
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"])

    monkeypatch.setattr(launch.RunLock, "holder", staticmethod(lambda run_dir: held[0] if held else None))
    monkeypatch.setattr(launch, "_start", start_here)
    code = launch.run_jobs([launch.Job(run_dir, "configs/quickstart.yaml")], gpus=[])
    out, _ = capfd.readouterr()
    assert code == 0 and "FAILED" not in out, out
    assert f"[1/1] running in another process (otherhost pid 7): {run_dir}; waiting for it" in out
    assert f"[1/1] finished {run_dir} in another process: best top-1 61.00%" in out


QUICKSTART = str(REPO / "configs/quickstart.yaml")


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("collect_results", ["--format", "xml"], "argument --format: invalid choice: 'xml'"),
        ("collect_results", ["--bogus"], "unrecognized arguments: --bogus"),
        ("collect_results", ["--metrics", "acc1,top5"], "--metrics takes a list of acc1, ece, nll, aurc"),
        ("sweep", ["--config", QUICKSTART], "the following arguments are required: --grid"),
        (
            "sweep",
            ["--config", QUICKSTART, "--grid", "train.lr=0.1", "--jobs", "x"],
            "argument --jobs: invalid int value",
        ),
        (
            "sweep",
            ["--config", QUICKSTART, "--grid", "train.lr=0.1", "--seeds", "a,b"],
            "--seeds takes a list like 0,1,2",
        ),
        ("sweep", ["--config", QUICKSTART, "--grid", "train.lr"], "--grid 'train.lr' must look like KEY=V1,V2,..."),
        ("launch", ["-", "--executor", "pbs"], "argument --executor: invalid choice: 'pbs'"),
        ("launch", ["-", "--gpus", "junk"], "--gpus takes GPU ids like 0,1,2, got 'junk'"),
        ("launch", ["-", "--jobs", "0"], "--jobs must be >= 1, got 0"),
        ("launch", ["-", "--timeout-min", "5"], "--timeout-min needs --executor slurm"),
        ("benchmark", ["--rounds", "0"], "--rounds must be >= 1"),
        ("benchmark", ["--rounds", "x"], "argument --rounds: invalid int value: 'x'"),
        ("benchmark", ["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        ("evaluate", [], "the following arguments are required: checkpoint"),
        ("evaluate", ["missing.pt"], "checkpoint not found: missing.pt"),
        ("visualize", ["missing.pt"], "the following arguments are required: --out"),
        ("visualize", ["missing.pt", "--out", "figures", "--images", "0"], "--images must be at least 1, got 0"),
    ],
)
def test_every_entry_point_reports_bad_input_as_one_error_line_and_exit_2(
    script, args, message, tmp_path, monkeypatch, capfd
):
    """argparse's own errors and ours alike: one ``error:`` line (argparse's usage before it), exit 2."""
    import importlib

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{tmp_path / 'run'} {QUICKSTART}\n"))
    try:
        code = status_of(importlib.import_module(f"scripts.{script}").main, args)
    except SystemExit as exit:
        code = exit.code
    out, err = capfd.readouterr()
    *usage, last = err.strip().splitlines()
    assert code == 2 and out == "", err
    assert re.match(r"([\w.-]+: )?error: ", last) and message in last, err
    assert all(line.startswith(("usage: ", " ")) for line in usage), err
    assert list(tmp_path.iterdir()) == []


def test_a_job_file_that_is_not_utf8_or_not_a_file_is_one_line(tmp_path, capfd):
    from scripts import launch

    job_file = tmp_path / "jobs.txt"
    good_line = f"{tmp_path / 'run'} configs/quickstart.yaml\n".encode()
    job_file.write_bytes(good_line + b"\xff\xfe caf\xe9\n")
    _, err = call(launch.main, capfd, str(job_file), code=2)
    assert err == f"error: job file {job_file} is not UTF-8 text (byte {len(good_line)}); save it as UTF-8\n"
    _, err = call(launch.main, capfd, str(tmp_path), code=2)
    assert err == f"error: job file not found: {tmp_path}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["jobs.txt"]


@pytest.mark.parametrize(
    "command",
    [
        [str(REPO / "train.py"), "--help-config"],
        [
            str(REPO / "scripts/sweep.py"),
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            "--grid",
            "seed=0,1,2",
            "--dry-run",
        ],
    ],
)
def test_a_reader_that_stops_early_gets_no_traceback(command, tmp_path):
    """``python train.py --help-config | head``: the reader goes away; the command ends quietly with
    the status a shell gives a process ended by SIGPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads, so the first write fails at once
    try:
        done = subprocess.run(
            [sys.executable, *command],
            cwd=tmp_path,
            env=train_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


# ---------------------------------------------------------------- the self-distillation table
SELFKD_SCRIPT = REPO / "scripts" / "reproduce_selfkd.sh"
SELFKD_METHODS = re.search(r"^METHODS=\(([^)]*)\)", SELFKD_SCRIPT.read_text(), re.M).group(1).split()
ALONE_ONLY = {"ce", "tffd"}  # CE + Tf-FD is the tffd run itself
SELFKD_CONFIGS = REPO / "configs" / "cifar100" / "selfkd"


def _selfkd_variants(methods=SELFKD_METHODS) -> list[str]:
    return [
        variant for method in methods for variant in ([method] if method in ALONE_ONLY else [method, f"{method}_tffd"])
    ]


def _selfkd_dry_run(*args: str) -> list[str]:
    out = run_script("reproduce_selfkd.sh", "--dry-run", *args).stdout
    commands = [line for line in out.splitlines() if re.match(r"(# finished: )?python train\.py ", line)]
    assert out.splitlines()[-1].startswith(f"# {len(commands)} runs: "), out
    return commands


@pytest.mark.parametrize("method", [m for m in SELFKD_METHODS if m not in ALONE_ONLY])
def test_selfkd_tffd_configs_add_tffd_to_the_method_alone(method):
    alone = to_dict(load_config(SELFKD_CONFIGS / f"cifar_resnet18_{method}.yaml"))
    plus = to_dict(load_config(SELFKD_CONFIGS / f"cifar_resnet18_{method}_tffd.yaml"))
    tffd = to_dict(load_config(SELFKD_CONFIGS / "cifar_resnet18_tffd.yaml"))
    assert plus["loss"]["terms"] == [*alone["loss"]["terms"], "tffd"]
    assert plus["batch"] == alone["batch"] and plus["loss"]["tffd"] == tffd["loss"]["tffd"]
    plus["loss"]["terms"] = alone["loss"]["terms"]
    assert plus == alone  # nothing else changes: the same protocol, backbone and method settings


def test_selfkd_dry_run_lists_every_method_alone_and_with_tffd_per_seed_on_a_scaled_schedule():
    commands = _selfkd_dry_run("--epochs", "40", "--model", "preact_resnet18")  # the default root, only listed
    assert len(commands) == 3 * len(_selfkd_variants())
    seeds, listed = [], set()
    for command in commands:
        config, run_dir = _arg(command, "--config"), _arg(command, "--run-dir")
        variant = re.fullmatch(r"configs/cifar100/selfkd/cifar_resnet18_(\w+)\.yaml", config).group(1)
        seed = int(command.split(" seed=")[1].split()[0])
        assert (REPO / config).is_file() and run_dir == f"runs/cifar100_selfkd_e40/preact_resnet18_{variant}/seed{seed}"
        # 105, 155 -> 21, 31; lr warm-up 5 -> 1; Tf-FD warm-up 20 -> 4 (of 200 epochs)
        assert (
            f"seed={seed} model.name=preact_resnet18 train.epochs=40 'train.milestones=[21,31]' "
            "train.lr_warmup_epochs=1 loss.tffd.warmup_epochs=4 --run-dir" in command
        )
        seeds.append(seed)
        listed.add((variant, seed))
    assert seeds == sorted(seeds)  # seed-major
    assert listed == {(variant, seed) for variant in _selfkd_variants() for seed in (0, 1, 2)}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "ce,byot_typo"], "error: --methods takes a list of ce tffd "),
        (["--methods", "ce,"], "got 'ce,'"),
        (["--model", "resnet20"], "error: --model takes one of cifar_resnet18 preact_resnet18, got 'resnet20'"),
        (["--epochs", "0"], "error: --epochs takes a positive integer, got '0'"),
        (["--seeds", "0-2"], "error: --seeds takes a list like 0,1,2, got '0-2'"),
        (["--root"], "error: --root needs a value (see --help)"),
        (["--bogus"], "error: unknown option --bogus (see --help)"),
        (
            ["--methods", "mixskd", "--set", "batch.transforms=[cutmix]"],
            "batch plan mix_pairs (loss.mixskd needs it) pairs the images",
        ),
        (
            ["--methods", "dlb", "--set", "loss.terms=[ce,dlb,ddgsd]"],
            "(loss.dlb needs last_batch, loss.ddgsd needs two_views)",
        ),
        (["--epochs", "2", "--set", "train.epochs=3"], "--set 'train.epochs=3': train.epochs is set already"),
    ],
)
def test_selfkd_rejects_bad_options_before_launching_anything(args, message, tmp_path):
    root = ["--root", str(tmp_path / "table")] if args != ["--root"] else []
    _assert_rejected("reproduce_selfkd.sh", [*root, *args], message, tmp_path / "table")


TINY_SELFKD = [
    "--epochs",
    "1",
    "--seeds",
    "0",
    "--methods",
    "ce,cs_kd",
    "--gpus=",
    "--jobs",
    "3",
    *(
        f"--set={override}"
        for override in [
            "data.name=synthetic",
            "data.num_train=64",
            "data.num_test=32",
            "data.image_size=8",
            "train.batch_size=32",
            "train.eval_batch_size=64",
            "train.log_interval=1",
        ]
    ),
]


@pytest.fixture(scope="module")
def selfkd_table(tmp_path_factory):
    """A one-epoch synthetic pass of two methods through reproduce_selfkd.sh: CE, CS-KD, CS-KD + Tf-FD."""
    root = tmp_path_factory.mktemp("selfkd")
    result = run_script("reproduce_selfkd.sh", "--root", str(root), *TINY_SELFKD)
    return root, result


def test_selfkd_tiny_run_trains_each_method_alone_and_with_tffd(selfkd_table):
    root, result = selfkd_table
    assert "3 runs: 0 already finished, 3 to run" in result.stdout
    for variant, terms in (("ce", ["ce"]), ("cs_kd", ["ce", "cs_kd"]), ("cs_kd_tffd", ["ce", "cs_kd", "tffd"])):
        run_dir = root / f"cifar_resnet18_{variant}" / "seed0"
        assert read_metrics(run_dir)["finished"]
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["loss"]["terms"] == terms and saved["model"]["name"] == "cifar_resnet18"
        assert saved["train"]["epochs"] == 1 and saved["train"]["milestones"] == []
        assert saved["train"]["lr_warmup_epochs"] == 0 and saved["loss"]["tffd"]["warmup_epochs"] == 0


def test_selfkd_rerun_skips_the_finished_runs(selfkd_table):
    root, _ = selfkd_table
    again = run_script("reproduce_selfkd.sh", "--root", str(root), *TINY_SELFKD).stdout
    assert "3 runs: 3 already finished, 0 to run" in again and "started" not in again


def test_collect_results_shows_the_tiny_selfkd_pass_as_method_by_alone_and_tffd(selfkd_table, capfd):
    root, _ = selfkd_table
    out, _ = call(collect_results.main, capfd, str(root))
    m = {
        variant: read_metrics(root / f"cifar_resnet18_{variant}" / "seed0") for variant in ("ce", "cs_kd", "cs_kd_tffd")
    }
    assert "### Self-distillation: method × {alone, + Tf-FD}" in out
    assert (
        "| method | alone: last-epoch top-1 | alone: best-epoch top-1 | + Tf-FD: last-epoch top-1 | "
        "+ Tf-FD: best-epoch top-1 |" in out
    )
    ce, cs_kd, plus = m["ce"], m["cs_kd"], m["cs_kd_tffd"]
    assert (
        f"| CE | {ce['last_acc1']:.2f} | {ce['best_acc1']:.2f} | – | – | – | 76.24 [1]†; 75.82 [2]† | – | "
        "1/1 finished | – |"
    ) in out, out
    assert (
        f"| CS-KD | {cs_kd['last_acc1']:.2f} | {cs_kd['best_acc1']:.2f} | {plus['last_acc1']:.2f} | "
        f"{plus['best_acc1']:.2f} | {plus['best_acc1'] - cs_kd['best_acc1']:+.2f} | "
        "78.66 [1]†; 78.70 [3]† | – | 1/1 finished | 1/1 finished |"
    ) in out, out
    assert "Not Self-KD-Lib's CIFAR-100 protocol (dataset synthetic, not cifar100;" in out
    assert "| Baseline |" not in out and "missing" not in out  # no Tf-FD paper table for self-KD runs


def test_collect_results_puts_published_selfkd_numbers_beside_like_for_like_runs(tmp_path, capfd):
    bests = {0: 76.0, 1: 76.6}
    for seed, best in bests.items():
        fake_run(
            tmp_path / "preact_resnet18_ce" / f"seed{seed}",
            "configs/cifar100/selfkd/cifar_resnet18_ce.yaml",
            [f"seed={seed}", "model.name=preact_resnet18"],
            best - 0.5,
            best,
        )
    for variant in ("mixup", "mixup_tffd"):
        fake_run(
            tmp_path / f"preact_resnet18_{variant}" / "seed0",
            f"configs/cifar100/selfkd/cifar_resnet18_{variant}.yaml",
            ["model.name=preact_resnet18"],
            78.0,
            78.5,
        )
    fake_run(
        tmp_path / "preact_resnet18_random_erase" / "seed0",  # a method of data.augment: a row of its own
        "configs/cifar100/selfkd/cifar_resnet18_random_erase.yaml",
        ["model.name=preact_resnet18"],
        76.5,
        77.0,
    )
    fake_run(tmp_path / "cifar_resnet18_ce" / "seed0", "configs/cifar100/selfkd/cifar_resnet18_ce.yaml", [], 75.0, 75.5)
    fake_run(
        tmp_path / "resnet20_cutout" / "seed0",
        "configs/cifar100/resnet20_ce.yaml",
        ["batch.transforms=[cutout]"],
        69.0,
        69.5,
    )  # a self-KD method on a Tf-FD paper backbone
    csv_path = tmp_path / "table.csv"
    out, _ = call(collect_results.main, capfd, str(tmp_path), "--csv", str(csv_path))
    tables = dict(re.findall(r"#### (\S+) on cifar100[^\n]*\n(.*?)(?=\n####|\Z)", out, re.S))  # model -> table
    preact, cifar_resnet18 = tables["preact_resnet18"], tables["cifar_resnet18"]
    mean = statistics.fmean(bests.values())
    assert "Self-KD-Lib's CIFAR-100 protocol (configs/_base_/schedules/selfkd_200e.yaml)." in preact
    assert (
        f"| CE | {mean - 0.5:.2f} ± 0.42 | {mean:.2f} ± 0.42 | – | – | – | 76.24 [1]; 75.82 [2]† | "
        f"{mean - 76.24:+.2f} |" in preact
    )  # like-for-like: no †, and the difference from it
    assert (
        "| Mixup | 78.00 | 78.50 | 78.00 | 78.50 | +0.00 | 78.68 [1] | -0.18 | 1/1 finished | 1/1 finished |" in preact
    )
    assert "| RandErase | 76.50 | 77.00 | – | – | – | 76.75 [1] | +0.25 |" in preact
    assert "[1] Self-KD-Lib README (winycg/Self-KD-Lib), CIFAR-100 table: PreAct ResNet-18, best epoch" in preact
    assert "Like-for-like with these runs: same backbone and protocol." in preact
    assert "| CE | 75.00 | 75.50 | – | – | – | 76.24 [1]†; 75.82 [2]† | – |" in cifar_resnet18
    assert "† Not like-for-like: another backbone (PreAct ResNet-18; these runs: cifar_resnet18)." in cifar_resnet18
    assert "| Cutout | 69.00 | 69.50 |" in tables["resnet20"] and "78.04 (CE 77.54) [2]†" in tables["resnet20"]
    assert "Cutout paper (DeVries and Taylor, 2017; uoguelph-mlrg/Cutout): ResNet-18" in tables["resnet20"]
    assert "| Baseline |" not in out and "missing" not in out
    rows = {(row["model"], row["method"]): row for row in csv.DictReader(csv_path.open())}
    assert float(rows[("preact_resnet18", "CE")]["paper"]) == 76.24
    assert rows[("preact_resnet18", "CE")]["paper_source"].startswith("Self-KD-Lib README")
    assert rows[("preact_resnet18", "Mixup+Tf-FD")]["paper"] == "" and rows[("cifar_resnet18", "CE")]["paper"] == ""


def test_collect_results_puts_the_imagenet_selfkd_runs_beside_imagenet_numbers(tmp_path, capfd):
    for variant, (last, best) in {
        "ce": (69.5, 69.8),
        "tffd": (70.2, 70.4),
        "uskd": (70.5, 70.9),
        "uskd_tffd": (70.8, 71.0),
    }.items():
        fake_run(
            tmp_path / f"resnet18_{variant}" / "seed0", f"configs/imagenet/resnet18_{variant}.yaml", [], last, best
        )
    out, _ = call(collect_results.main, capfd, str(tmp_path))
    table = out.split("#### resnet18 on imagenet")[1]
    assert "The standard ImageNet 100-epoch recipe (configs/_base_/schedules/imagenet_100e.yaml)." in table
    assert "| published top-1, + Tf-FD [note] | Δ best, + Tf-FD − like-for-like published |" in table
    # CE: the IJCNN Tf-FD paper's and USKD's baselines, like-for-like; its + Tf-FD cell is Tf-FD, published once
    assert (
        "| CE | 69.50 | 69.80 | 70.20 | 70.40 | +0.60 | 69.75 [1]; 69.90 [2] | +0.05 | 70.55 (CE 69.75) [1] | "
        "-0.15 |" in table
    ), table
    assert "| USKD | 70.50 | 70.90 | 70.80 | 71.00 | +0.10 | 70.79 (CE 69.90) [2] | +0.11 | none | – |" in table
    assert "[2] USKD (Yang et al., ICCV 2023; yzd-v/cls_KD nkd.md): ImageNet ResNet-18" in table
    assert "76.24" not in table and "Self-KD-Lib" not in table  # CIFAR-100's numbers stay in CIFAR-100's tables
