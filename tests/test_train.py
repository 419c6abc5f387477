"""End to end through train.py on the synthetic dataset: learning, outputs, TensorBoard, resume."""

from __future__ import annotations

import signal

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import SMOKE, read_metrics, run_train, start_train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tffd"
    result = run_train(*SMOKE, "train.epochs=3", "--run-dir", str(run_dir), check=True)
    return run_dir, result


def test_training_learns_well_above_chance(finished_run):
    run_dir, result = finished_run
    metrics = read_metrics(run_dir)
    assert metrics["finished"] is True and metrics["epochs_done"] == 3
    assert metrics["best_acc1"] > 30.0, f"chance is 10%, got {metrics['best_acc1']}"
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert metrics["last_acc1"] == metrics["history"][-1]["test_acc1"]
    assert metrics["best_acc1"] == max(h["test_acc1"] for h in metrics["history"])
    assert metrics["history"][metrics["best_epoch"] - 1]["test_acc1"] == metrics["best_acc1"]
    assert metrics["test_samples"] == 256
    assert "done: best test top-1" in result.stdout and "tensorboard --logdir" in result.stdout


def test_run_directory_contents(finished_run):
    run_dir, _ = finished_run
    for name in ("config.yaml", "log.txt", "last.pt", "best.pt", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / ".lock").exists()
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["data"]["name"] == "synthetic" and resolved["train"]["epochs"] == 3
    assert resolved["loss"]["tffd"]["lambda_intra"] == 8e-4  # from configs/quickstart.yaml, fully resolved
    log = (run_dir / "log.txt").read_text()
    assert "resolved config:" in log and "M parameters" in log and "FLOPs" in log and "device: cpu" in log
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and "optimizer" in state and "scheduler" in state


def test_tensorboard_events_hold_named_scalars(finished_run):
    run_dir, _ = finished_run
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/ce",
        "train/tffd_intra",
        "train/tffd_inter",
        "train/acc1",
        "train/acc5",
        "train/lr",
        "train/images_per_s",
        "test/acc1",
        "test/acc5",
        "epoch/train_loss",
        "epoch/images_per_s",
    }
    assert expected <= tags, expected - tags
    assert [e.step for e in events.Scalars("test/acc1")] == [1, 2, 3]
    assert len(events.Scalars("train/ce")) >= 6  # every log_interval=2 steps, 8 steps per epoch


def test_finished_run_is_not_overwritten_without_flag(finished_run):
    run_dir, _ = finished_run
    before = (run_dir / "last.pt").read_bytes()
    result = run_train(*SMOKE, "train.epochs=3", "--run-dir", str(run_dir))
    assert result.returncode == 2
    assert "holds a finished run" in result.stderr and "--overwrite" in result.stderr
    assert (run_dir / "last.pt").read_bytes() == before


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    run_dir = tmp_path / "run"
    process = start_train(*SMOKE, "train.epochs=3", "--run-dir", str(run_dir))
    for line in process.stdout:
        if line.startswith("epoch 1/3"):
            process.send_signal(signal.SIGTERM)
            break
    output = process.stdout.read()
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    assert "Run the same command again to resume" in output
    interrupted = read_metrics(run_dir)
    assert not interrupted["finished"] and interrupted["epochs_done"] in (1, 2)

    result = run_train(*SMOKE, "train.epochs=3", "--run-dir", str(run_dir), check=True)
    assert f"resuming after epoch {interrupted['epochs_done']}" in result.stdout
    metrics = read_metrics(run_dir)
    assert metrics["finished"] and [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["history"][0] == interrupted["history"][0]


def test_overrides_change_the_run_and_bad_ones_write_nothing(tmp_path):
    result = run_train(*SMOKE, "loss.tffd.lamda_intra=1e-3", "--run-dir", str(tmp_path / "typo"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown config key 'loss.tffd.lamda_intra'; did you mean 'loss.tffd.lambda_intra'?"
    ]
    assert not (tmp_path / "typo").exists()


def test_evaluate_uses_eval_mode_and_restores_the_mode():
    from engine.trainer import evaluate

    class ModeProbe(torch.nn.Module):
        """Predicts class 1 in eval mode and class 0 in train mode, beside a BatchNorm that would learn."""

        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(3)

        def forward(self, x):
            features = self.bn(x.flatten(1)[:, :3])
            logits = torch.zeros(x.shape[0], 10).index_fill_(1, torch.tensor([0 if self.training else 1]), 1.0)
            return logits + 0 * features.sum(), [features]

    model = ModeProbe().train()
    batches = [(torch.randn(4, 3, 2, 2), torch.ones(4, dtype=torch.long)) for _ in range(3)]
    result = evaluate(model, batches, torch.device("cpu"))
    assert result["acc1"] == 100.0 and result["count"] == 12
    assert model.training, "evaluate must give the model back in the mode it found it"
    assert torch.equal(model.bn.running_mean, torch.zeros(3)), "test batches must not move BatchNorm statistics"
