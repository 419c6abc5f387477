"""The lr schedule (engine/schedule.py): per-step warm-up, per-epoch decay, by hand and against
PyTorch's MultiStepLR stepped per epoch."""

from __future__ import annotations

import pytest
import torch

from engine.schedule import lr_factor


@pytest.mark.parametrize(
    "step, factor",
    [
        (0, 0.05),
        (9, 0.5),
        (19, 1.0),
        (20, 1.0),
        (39, 1.0),
        (40, 0.1),
        (59, 0.1),
        (60, 0.01),
        (99, 0.01),
    ],
)
def test_warmup_then_decay_by_hand(step, factor):
    # 10 steps per epoch, warm-up over 2 epochs, x0.1 after epochs 4 and 6
    assert lr_factor(step, 10, [4, 6], 0.1, 2) == pytest.approx(factor)


def test_without_warmup_it_is_multistep_lr_stepped_per_epoch():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[150, 180, 210], gamma=0.1)
    for epoch in range(240):
        for step in range(epoch * 7, (epoch + 1) * 7):
            assert 0.1 * lr_factor(step, 7, [150, 180, 210], 0.1, 0) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()


def test_the_trainer_follows_the_schedule(tmp_path):
    from conftest import SMOKE, read_metrics, run_train

    run_dir = tmp_path / "run"
    run_train(
        *SMOKE,
        "train.epochs=3",
        "train.lr=0.1",
        "train.lr_warmup_epochs=2",
        "train.milestones=[2]",
        "--run-dir",
        str(run_dir),
        check=True,
    )  # 512 / 64 = 8 steps per epoch
    lrs = [epoch["train_lr"] for epoch in read_metrics(run_dir)["history"]]  # each epoch's first step
    assert lrs == pytest.approx([0.1 * 1 / 16, 0.1 * 9 / 16, 0.1 * 0.1])
