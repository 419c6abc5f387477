"""Logit KD and the frozen teacher: the loss value, what gets gradients, when a teacher exists at all,
and the one-line errors of bad teacher checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import train
from engine.builder import build_experiment
from engine.cli import status_of
from engine.config import load_config
from engine.distributed import DistContext
from engine.teacher import FrozenTeacher
from losses import StepOutput
from losses.kd import KDConfig, KnowledgeDistillation, kd_loss
from models import MODELS, build_model

from conftest import SMOKE, run_train

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
TINY = [*SMOKE, "data.num_train=64", "data.num_test=64", "train.epochs=1"]


def _softmax(row):
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def test_kd_loss_matches_the_formula_on_a_2x3_example():
    student, teacher, temperature = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [[3.0, 2.0, 1.0], [1.0, 0.0, -1.0]], 2.0
    # KL(p_t || p_s) per row with p = softmax(logits / T), averaged over the 2 rows, times T^2
    rows = []
    for s_row, t_row in zip(student, teacher):
        p_s, p_t = _softmax([x / temperature for x in s_row]), _softmax([x / temperature for x in t_row])
        rows.append(sum(t * math.log(t / s) for t, s in zip(p_t, p_s)))
    expected = sum(rows) / 2 * temperature**2
    assert expected == pytest.approx(0.797155, abs=1e-6)  # by hand: (0.320157 + 0.078421) / 2 * 4
    got = kd_loss(torch.tensor(student), torch.tensor(teacher), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-6)

    term = KnowledgeDistillation(KDConfig(weight=0.9, temperature=temperature))
    step = StepOutput(torch.tensor(student), [], torch.tensor([0, 1]), epoch=1, teacher_logits=torch.tensor(teacher))
    assert term(step)["kd"].item() == pytest.approx(0.9 * expected, rel=1e-6)


def test_kd_loss_is_zero_when_the_softened_distributions_match():
    logits = torch.tensor([[0.5, -1.0, 2.0], [3.0, 0.0, 0.0]])
    assert kd_loss(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-7)
    # softmax ignores a constant added to a row, so the distributions still match
    assert kd_loss(logits + 5.0, logits, 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_gradient_reaches_the_student_only():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    kd_loss(student, teacher, 4.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_kd_config_rejects_bad_values():
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="temperature must be >= 0.01, got 0"):
        KDConfig(temperature=0.0)
    with pytest.raises(ConfigError, match="weight must be >= 0, got -0.1"):
        KDConfig(weight=-0.1)


def test_frozen_teacher_stays_in_eval_mode_and_gets_no_gradient():
    torch.manual_seed(0)
    teacher = FrozenTeacher(build_model("resnet20", num_classes=10))
    student = build_model("resnet20", num_classes=10)
    both = nn.ModuleDict({"student": student, "teacher": teacher})
    both.train()  # what a trainer calling .train() on everything would do
    teacher.train()
    assert student.training
    assert not any(module.training for module in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())

    bn = next(m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d))
    running_mean = bn.running_mean.clone()
    images = torch.randn(8, 3, 16, 16, requires_grad=True)
    teacher_logits = teacher(images)
    assert not teacher_logits.requires_grad
    assert torch.equal(bn.running_mean, running_mean)  # eval-mode BatchNorm: statistics untouched

    logits, _ = student(images)
    kd_loss(logits, teacher_logits, 4.0).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())


def _save_run_checkpoint(path: Path, model_name: str, num_classes: int) -> Path:
    """A checkpoint in the trainer's format (a state_dict plus the run's metadata)."""
    model = build_model(model_name, num_classes)
    torch.save({"model": model.state_dict(), "model_name": model_name, "num_classes": num_classes}, path)
    return path


def test_kd_experiment_builds_a_frozen_teacher_outside_the_optimizer(tmp_path):
    checkpoint = _save_run_checkpoint(tmp_path / "teacher.pt", "resnet32", 10)
    config = load_config(
        "configs/cifar100/resnet20_kd.yaml", [*TINY, "teacher.model=resnet32", f"teacher.checkpoint={checkpoint}"]
    )
    experiment = build_experiment(config, CPU)
    assert isinstance(experiment.teacher, FrozenTeacher)
    saved = torch.load(checkpoint, weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in experiment.teacher.model.state_dict().items())
    optimized = {id(p) for group in experiment.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in experiment.teacher.parameters()}


@pytest.mark.parametrize("config", ["configs/cifar100/resnet20_ce.yaml", "configs/cifar100/resnet20_tffd.yaml"])
def test_methods_without_a_teacher_term_never_build_one(config, tmp_path):
    # A teacher is configured but points nowhere: loading it would fail, so building proves it is not loaded.
    config = load_config(config, [*TINY, "teacher.model=resnet110", f"teacher.checkpoint={tmp_path / 'absent.pt'}"])
    assert build_experiment(config, CPU).teacher is None


def _bad_teacher_files(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    good = _save_run_checkpoint(tmp_path / "good.pt", "resnet20", 10)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    bare = tmp_path / "bare_resnet32.pt"  # no metadata: the key comparison has to name the problem
    torch.save(build_model("resnet32", 10).state_dict(), bare)
    return {
        "missing": ([f"teacher.checkpoint={tmp_path / 'nope.pt'}"], "not found"),
        "truncated": ([f"teacher.checkpoint={truncated}"], "corrupt"),
        "garbage": ([f"teacher.checkpoint={garbage}"], "corrupt"),
        "other architecture (run checkpoint)": (
            [f"teacher.checkpoint={good}", "teacher.model=resnet32"],
            "holds a resnet20, not a resnet32",
        ),
        "other architecture (bare state_dict)": ([f"teacher.checkpoint={bare}"], "unexpected keys stages.0.3."),
        "other class count": (
            [f"teacher.checkpoint={good}", "data.num_classes=7"],
            "trained for 10 classes, but the dataset has 7",
        ),
        "no checkpoint configured": (["teacher.checkpoint=null"], "set teacher.model and teacher.checkpoint"),
    }


CASES = [
    "missing",
    "truncated",
    "garbage",
    "other architecture (run checkpoint)",
    "other architecture (bare state_dict)",
    "other class count",
    "no checkpoint configured",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_teacher_checkpoint_is_one_line_exit_2_and_no_run_dir(case, tmp_path, capfd):
    overrides, message = _bad_teacher_files(tmp_path)[case]
    run_dir = tmp_path / "run"
    code = status_of(
        train.main,
        [
            "--config",
            "configs/cifar100/resnet20_kd_tffd.yaml",
            *TINY,
            "teacher.model=resnet20",
            *overrides,
            "--run-dir",
            str(run_dir),
        ],
    )
    stderr = capfd.readouterr().err
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr
    assert not run_dir.exists()


def test_bad_teacher_checkpoint_through_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(
        *TINY,
        f"teacher.checkpoint={tmp_path / 'nope.pt'}",
        "--run-dir",
        str(run_dir),
        config="configs/cifar100/resnet20_kd.yaml",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: teacher.checkpoint not found: {tmp_path / 'nope.pt'}"
    assert not run_dir.exists()


STUDENT_TEACHER = {
    "resnet20": "resnet110",
    "resnet32": "resnet110",
    "wrn_16_2": "wrn_40_2",
    "resnet8x4": "resnet32x4",
    "vgg8": "vgg13",
}


@pytest.mark.parametrize("student", sorted(STUDENT_TEACHER))
@pytest.mark.parametrize("row", ["kd", "kd_tffd"])
def test_kd_configs_follow_the_kd_benchmark_protocol(student, row):
    config = load_config(f"configs/cifar100/{student}_{row}.yaml")
    teacher = STUDENT_TEACHER[student]
    assert config.model.name == student and config.teacher.model == teacher
    assert config.model.name in MODELS and teacher in MODELS
    assert config.teacher.checkpoint == f"runs/cifar100/{teacher}_ce/best.pt"
    assert config.loss.terms == (["ce", "kd"] if row == "kd" else ["ce", "kd", "tffd"])
    assert (config.loss.ce.weight, config.loss.kd.weight, config.loss.kd.temperature) == (0.1, 0.9, 4.0)
    assert (config.train.batch_size, config.train.lr, config.train.epochs) == (64, 0.05, 240)
    assert config.train.milestones == [150, 180, 210] and config.data.name == "cifar100"
    if row == "kd_tffd":  # the same lambdas as the student's own Tf-FD config
        tffd = load_config(f"configs/cifar100/{student}_tffd.yaml").loss.tffd
        assert config.loss.tffd == tffd
