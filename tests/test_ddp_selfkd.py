"""Self-distillation terms under real two-process DDP (torchrun, gloo): a sampler's partners, terms
with parameters (BYOT's heads, whose gradients DDP must reduce), per-sample state kept on every rank
(PS-KD's table) and per-rank state across steps (DLB's last batch), through a kill and a resume."""

from __future__ import annotations

import json

import pytest
from test_ddp import (
    CONFIG,
    FIRST_STEP_TOLERANCE,
    SMALL,
    STEPS_PER_EPOCH,
    assert_finished,
    dist_train,
    replica_differences,
    torchrun_probe,
    train_loss_curve,
)

from engine.checkpoint import load_checkpoint
from scripts import evaluate

from conftest import REPO, run_train
from in_process import run_main

STATEFUL = [*SMALL, "loss.terms=[ps_kd,byot,dlb]", "--config", str(REPO / CONFIG)]
HISTORY_KEYS = ("train_loss", "train_ps_kd", "train_byot_kd", "train_dlb", "test_loss", "test_acc1")


def test_cs_kd_pairs_each_ranks_anchors_like_the_one_process_run(tmp_path):
    args = [*SMALL, "loss.terms=[ce,cs_kd,tffd]"]
    two = dist_train(*args, "--run-dir", str(tmp_path / "two"))
    one = run_train(*args, "--run-dir", str(tmp_path / "one"), config=CONFIG)
    metrics = assert_finished(two, tmp_path / "two")
    assert_finished(one, tmp_path / "one")
    assert "train_cs_kd" in metrics["history"][-1] and metrics["world_size"] == 2
    # Step 1, before any update: the same anchors and partners; only BatchNorm's per-rank statistics differ.
    first_two, first_one = (train_loss_curve(tmp_path / name)[1] for name in ("two", "one"))
    assert abs(first_two - first_one) / first_one <= FIRST_STEP_TOLERANCE, (first_two, first_one)
    # Calibration is summed exactly over the ranks' test shards: one process evaluating best.pt on the
    # whole test set gets the best epoch's ECE and AURC (an average of per-rank ECEs would not).
    evaluated = run_main(evaluate.main, [str(tmp_path / "two" / "best.pt"), "--json"], check=True)
    figures = json.loads(evaluated.stdout)
    for key in ("ece", "aurc", "nll"):
        assert figures[key] == pytest.approx(metrics[f"best_{key}"], rel=1e-5, abs=1e-5), key


def test_heads_and_state_train_alike_on_every_rank_and_resume_exactly(tmp_path):
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    reference = torchrun_probe(*STATEFUL, "--run-dir", str(reference_dir))
    expected = assert_finished(reference, reference_dir)
    # BYOT's heads are inside DDP: their gradients are reduced, so the replicas (and every buffer) agree.
    assert replica_differences(reference.stdout) == (0.0, 0.0), reference.stdout[-3000:]
    state = load_checkpoint(reference_dir / "last.pt")
    assert state["terms"][0]["seen"].all()  # each rank trains on half the samples; both hold every prediction
    memories = [rank["_extra_state"] for rank in state["rank_plan"]]  # DLB's plan: each rank's own last batch
    assert len(memories) == 2 and not set(memories[0]["indices"].tolist()) & set(memories[1]["indices"].tolist())

    # A preemption notice reaching rank 1 alone, in epoch 2; both stop, then resume from last.pt.
    stopped = torchrun_probe(
        "--inject", "sigterm", "--rank", "1", "--step", str(STEPS_PER_EPOCH + 3), *STATEFUL, "--run-dir", str(run_dir)
    )
    assert "stopped by" in stopped.stdout and "after 1 finished epochs" in stopped.stdout, stopped.stdout[-3000:]
    resumed = torchrun_probe(*STATEFUL, "--run-dir", str(run_dir))
    metrics = assert_finished(resumed, run_dir)
    assert "resuming after epoch 1" in resumed.stdout
    assert replica_differences(resumed.stdout) == (0.0, 0.0)
    assert [[epoch[k] for k in HISTORY_KEYS] for epoch in metrics["history"]] == [
        [epoch[k] for k in HISTORY_KEYS] for epoch in expected["history"]
    ]
