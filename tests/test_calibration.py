"""ECE and AURC on hand-computed predictions (empty bins, bin edges, ties), and their sums over parts."""

from __future__ import annotations

import math

import pytest
import torch

from engine.calibration import aurc, calibration_sums, confidences_and_hits, expected_calibration_error


def test_confidence_is_the_max_softmax_and_a_hit_its_argmax():
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 0.0]])
    confidence, hits = confidences_and_hits(logits, torch.tensor([1, 1]))
    torch.testing.assert_close(confidence, torch.tensor([0.75, math.e**2 / (1 + math.e**2)]))
    assert hits.tolist() == [True, False]


def test_ece_by_hand_with_empty_bins():
    # Bins of width 1/15: 0.9 -> (13/15, 14/15], 0.5 -> (7/15, 8/15], 0.3 -> (4/15, 5/15]; 12 bins stay empty.
    confidence = torch.tensor([0.9, 0.9, 0.5, 0.3], dtype=torch.float64)
    hits = torch.tensor([True, False, True, False])
    sums = calibration_sums(confidence, hits)
    assert sums[0].tolist() == [0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0]
    # 2/4 * |1/2 - 0.9| + 1/4 * |1 - 0.5| + 1/4 * |0 - 0.3| = 0.2 + 0.125 + 0.075
    assert expected_calibration_error(sums) == pytest.approx(40.0)


def test_ece_bins_are_closed_on_the_right_and_perfect_calibration_is_zero():
    edge = torch.tensor([1 / 3, 1.0], dtype=torch.float64)  # 1/3 = 5/15 ends bin 4; 1.0 ends bin 14
    assert torch.nonzero(calibration_sums(edge, torch.tensor([False, True]))[0]).squeeze(1).tolist() == [4, 14]
    confidence = torch.full((4,), 0.75, dtype=torch.float64)
    assert expected_calibration_error(calibration_sums(confidence, torch.tensor([True, True, True, False]))) == 0
    assert math.isnan(expected_calibration_error(torch.zeros(3, 15)))


def test_ece_sums_add_over_parts_like_ranks_do():
    torch.manual_seed(0)
    confidence, hits = torch.rand(101), torch.rand(101) > 0.4
    whole = calibration_sums(confidence, hits)
    parts = calibration_sums(confidence[:50], hits[:50]) + calibration_sums(confidence[50:], hits[50:])
    torch.testing.assert_close(parts, whole)
    per_part_mean = (
        expected_calibration_error(calibration_sums(confidence[:50], hits[:50]))
        + expected_calibration_error(calibration_sums(confidence[50:], hits[50:]))
    ) / 2
    assert expected_calibration_error(parts) != pytest.approx(per_part_mean)  # why the sums, not the ECEs, are reduced


def test_aurc_by_hand_without_ties():
    # Sorted by confidence: hit, miss, hit, miss -> risks 0, 1/2, 1/3, 1/2
    confidence = torch.tensor([0.3, 0.9, 0.5, 0.7])
    hits = torch.tensor([False, True, True, False])
    assert aurc(confidence, hits) == pytest.approx(1000 * (0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)


def test_aurc_gives_a_tie_group_the_risk_of_the_whole_group_in_any_order():
    # 0.9 twice (one hit, one miss): both get the risk at coverage 2/4 = 1/2; then 1/3; then 2/4.
    expected = 1000 * (1 / 2 + 1 / 2 + 1 / 3 + 1 / 2) / 4
    for hits in ([True, False, True, False], [False, True, True, False]):
        assert aurc(torch.tensor([0.9, 0.9, 0.5, 0.3]), torch.tensor(hits)) == pytest.approx(expected)


def test_aurc_extremes():
    confidence = torch.tensor([0.9, 0.8, 0.7])
    assert aurc(confidence, torch.tensor([True, True, True])) == 0
    assert aurc(confidence, torch.tensor([False, False, False])) == 1000
    # The best ranking (errors least confident) beats the worst one.
    assert aurc(confidence, torch.tensor([True, True, False])) < aurc(confidence, torch.tensor([False, True, True]))
    assert math.isnan(aurc(torch.tensor([]), torch.tensor([], dtype=torch.bool)))


# ---------------------------------------------------------------- in a run: metrics.json, TensorBoard, evaluate.py
def test_every_evaluation_reports_nll_ece_and_aurc(tmp_path):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from scripts import evaluate

    from conftest import SMOKE, read_metrics, run_train
    from in_process import run_main

    run_dir = tmp_path / "run"
    result = run_train(*SMOKE, "--run-dir", str(run_dir), check=True)
    metrics = read_metrics(run_dir)
    for record in metrics["history"]:
        assert 0 <= record["test_ece"] <= 100 and 0 <= record["test_aurc"] <= 1000
        assert record["test_nll"] == record["test_loss"]  # "loss" stays, for readers of older runs
    best = metrics["history"][metrics["best_epoch"] - 1]
    for key in ("nll", "ece", "aurc"):
        assert (
            metrics[f"best_{key}"] == best[f"test_{key}"]
            and metrics[f"last_{key}"] == metrics["history"][-1][f"test_{key}"]
        )
    assert f"ECE {metrics['last_ece']:.2f}%" in result.stdout and f"AURC {metrics['last_aurc']:.1f}" in result.stdout
    events = EventAccumulator(str(run_dir))
    events.Reload()
    for tag in ("test/nll", "test/ece", "test/aurc"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    assert events.Scalars("test/ece")[-1].value == pytest.approx(metrics["last_ece"], rel=1e-6)
    # scripts/evaluate.py on best.pt: the best epoch's numbers.
    evaluated = run_main(evaluate.main, [str(run_dir / "best.pt"), "--json"], check=True)
    figures = json.loads(evaluated.stdout)
    for key in ("nll", "ece", "aurc"):
        assert figures[key] == pytest.approx(metrics[f"best_{key}"], rel=1e-5, abs=1e-6), key
