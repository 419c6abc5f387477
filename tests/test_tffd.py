"""Tf-FD losses against docs/METHOD.md on small hand-computed tensors, gradient flow included."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import losses.tffd
from core.errors import ConfigError
from core.typed_config import build
from losses import StepOutput
from losses.tffd import TeacherFreeFD, TfFDConfig, channel_salience, inter_fd, intra_fd, warmup_weight
from scripts.released_tffd import released_inter_fd, released_intra_fd, released_tffd


def feature(*channels, n=1, h=1, w=2):
    """A 1 x C x h x w feature from per-channel value lists, requiring grad."""
    return torch.tensor(channels, dtype=torch.float32).view(n, len(channels), h, w).clone().requires_grad_(True)


# ---------------------------------------------------------------- intra-layer
# Channels of one 1x4x1x2 feature and their saliences (mean of the L2-normalised map):
#   c0 = [3, 4]  -> [0.6, 0.8]        -> 0.7
#   c1 = [1, 0]  -> [1, 0]            -> 0.5
#   c2 = [1, 1]  -> [0.7071, 0.7071]  -> 0.7071
#   c3 = [-1, 2] -> [-0.4472, 0.8944] -> 0.2236
# Descending: c2, c0 | c1, c3. Pairs: (c2, c1) and (c0, c3).
# MSE = ((1-1)^2 + (1-0)^2 + (3+1)^2 + (4-2)^2) / 4 = (0 + 1 + 16 + 4) / 4 = 5.25
HAND = ([3.0, 4.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 2.0])


def test_salience_is_mean_of_l2_normalised_maps():
    salience = channel_salience(feature(*HAND))
    expected = torch.tensor([0.7, 0.5, math.sqrt(0.5), (-1 + 2) / math.sqrt(5) / 2])
    torch.testing.assert_close(salience, expected)


def test_intra_value_and_both_halves_get_gradient():
    f = feature(*HAND)
    loss = intra_fd(f)
    assert loss.item() == pytest.approx(5.25)
    loss.backward()
    # d/d redundant = 2 (r - s) / 4; d/d salient = -that
    expected = torch.tensor([[2.0, 1.0], [0.0, -0.5], [0.0, 0.5], [-2.0, -1.0]]).view(1, 4, 1, 2)
    torch.testing.assert_close(f.grad, expected)


def test_intra_detach_salient_stops_gradient_into_salient_half():
    f = feature(*HAND)
    intra_fd(f, detach_salient=True).backward()
    expected = torch.tensor([[0.0, 0.0], [0.0, -0.5], [0.0, 0.0], [-2.0, -1.0]]).view(1, 4, 1, 2)
    torch.testing.assert_close(f.grad, expected)


def test_intra_odd_channel_count_leaves_out_least_salient():
    # A fifth, all-zero channel (a dead ReLU map) has salience 0: it is the one left out.
    f = feature(*HAND, [0.0, 0.0])
    loss = intra_fd(f)
    assert loss.item() == pytest.approx(5.25)
    loss.backward()
    assert torch.count_nonzero(f.grad[0, 4]) == 0


def test_intra_orders_by_normalised_not_raw_magnitude():
    # c0 = [10, -1]: raw mean 4.5 but normalised mean 0.448; c1 = [1, 1]: raw 1, normalised 0.707.
    # So c1 is salient and c0 redundant: MSE = ((10-1)^2 + (-1-1)^2) / 2 = 42.5
    assert intra_fd(feature([10.0, -1.0], [1.0, 1.0])).item() == pytest.approx(42.5)


def test_intra_salience_averages_over_the_batch():
    # 1x1 maps normalise to their sign. c0 over N=2: [+1, -1] -> 0; c1: [+1, +1] -> 1. c1 is salient.
    f = torch.tensor([[[[1.0]], [[2.0]]], [[[-1.0]], [[3.0]]]]).requires_grad_(True)  # N=2, C=2
    assert intra_fd(f).item() == pytest.approx(((1 - 2) ** 2 + (-1 - 3) ** 2) / 2)


# ---------------------------------------------------------------- inter-layer
def test_inter_pools_crops_channels_and_detaches_deep():
    shallow = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 4.0]]]]).requires_grad_(True)  # 1x2x2x2
    deep = torch.tensor([5.0, -1.0, 7.0]).view(1, 3, 1, 1).requires_grad_(True)  # 3 channels, 1x1
    loss = inter_fd(shallow, deep)
    # pooled shallow = [2.5, 1.0]; deep's first 2 channels = [5, -1]: ((2.5-5)^2 + (1+1)^2) / 2
    assert loss.item() == pytest.approx(5.125)
    loss.backward()
    assert deep.grad is None, "the deep feature teaches: it must get no gradient"
    expected = torch.tensor([-2.5 / 4] * 4 + [2.0 / 4] * 4).view(1, 2, 2, 2)
    torch.testing.assert_close(shallow.grad, expected)


def test_inter_pooling_matches_avg_pool_for_power_of_two_sizes():
    torch.manual_seed(0)
    shallow, deep = torch.randn(2, 16, 8, 8), torch.randn(2, 32, 2, 2)
    expected = F.mse_loss(F.avg_pool2d(shallow, kernel_size=4), deep[:, :16])
    torch.testing.assert_close(inter_fd(shallow, deep), expected)


# ---------------------------------------------------------------- the term, weights and warm-up
# The released code's loss (scripts/released_tffd.py), transcribed literally: the reference.
reference_intra, reference_inter = released_intra_fd, released_inter_fd


def three_stage_feats(seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(4, 16, 16, 16), (4, 32, 8, 8), (4, 64, 4, 4)]
    return [torch.randn(s, generator=generator).relu().requires_grad_(True) for s in shapes]


def test_losses_equal_the_released_transcription_in_fp32():
    feats = three_stage_feats()
    for f in feats:
        assert torch.equal(intra_fd(f), reference_intra(f))
    for i in range(3):
        for j in range(i + 1, 3):
            assert torch.equal(inter_fd(feats[i], feats[j]), reference_inter(feats[i], feats[j]))


@pytest.mark.parametrize("epoch, weight", [(1, 0.05), (10, 0.5), (20, 1.0), (30, 1.0)])
def test_total_with_warmup(epoch, weight):
    assert warmup_weight(epoch, 20) == pytest.approx(weight)
    feats = three_stage_feats()
    term = TeacherFreeFD(TfFDConfig(lambda_intra=4e-4, lambda_inter=5e-3, warmup_epochs=20))
    out = term(StepOutput(torch.zeros(4, 10), feats, torch.zeros(4, dtype=torch.long), epoch))
    pairs = [(0, 1), (0, 2), (1, 2)]
    inter = sum(reference_inter(feats[i], feats[j]) for i, j in pairs) / 3
    intra = sum(reference_intra(f) for f in feats) / 3
    torch.testing.assert_close(out["tffd_inter"], weight * 5e-3 * inter)
    torch.testing.assert_close(out["tffd_intra"], weight * 4e-4 * intra)


def test_stage_subset_and_explicit_pairs():
    feats = three_stage_feats(1)
    term = TeacherFreeFD(TfFDConfig(lambda_intra=1.0, lambda_inter=1.0, warmup_epochs=0, stages=[2, 3], pairs=[[1, 3]]))
    out = term(StepOutput(torch.zeros(4, 10), feats, torch.zeros(4, dtype=torch.long), 1))
    torch.testing.assert_close(out["tffd_inter"], reference_inter(feats[0], feats[2]))
    torch.testing.assert_close(out["tffd_intra"], (reference_intra(feats[1]) + reference_intra(feats[2])) / 2)
    term.check_features([(16, 16, 16), (32, 8, 8), (64, 4, 4)])
    with pytest.raises(ConfigError, match="stage 3"):
        term.check_features([(16, 16, 16), (32, 8, 8)])


def test_default_pairs_follow_the_chosen_stages():
    term = TeacherFreeFD(TfFDConfig(stages=[2, 3, 4]))
    assert term._pairs(4) == [[2, 3], [2, 4], [3, 4]]


def test_zero_lambda_skips_the_term_and_negative_is_rejected():
    term = TeacherFreeFD(TfFDConfig(lambda_intra=0.0, lambda_inter=1.0))
    out = term(StepOutput(torch.zeros(4, 10), three_stage_feats(), torch.zeros(4, dtype=torch.long), 30))
    assert set(out) == {"tffd_inter"}
    with pytest.raises(ConfigError, match="loss.tffd.lambda_intra must be >= 0, got -0.001"):
        build(TfFDConfig, {"lambda_intra": -1e-3}, prefix="loss.tffd.")


def test_term_equals_released_loss_values_and_gradients():
    feats = three_stage_feats(5)
    term = TeacherFreeFD(TfFDConfig(lambda_intra=0.3, lambda_inter=0.7, warmup_epochs=20))
    out = term(StepOutput(torch.zeros(4, 10), feats, torch.zeros(4, dtype=torch.long), 5))
    ours = out["tffd_intra"] + out["tffd_inter"]
    released = released_tffd(feats, lambda_intra=0.3, lambda_inter=0.7, weight=0.25)
    torch.testing.assert_close(ours, released, rtol=1e-6, atol=0)
    for mine, theirs in zip(torch.autograd.grad(ours, feats), torch.autograd.grad(released, feats)):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-12)


def test_the_term_trains_the_module_level_functions(monkeypatch):
    """Edit or monkeypatch intra_fd / inter_fd and the term computes that: one source of truth."""
    feats = three_stage_feats(6)
    term = TeacherFreeFD(TfFDConfig(lambda_intra=1.0, lambda_inter=1.0, warmup_epochs=0))
    step = StepOutput(torch.zeros(4, 10), feats, torch.zeros(4, dtype=torch.long), 1)
    before = term(step)
    monkeypatch.setattr(losses.tffd, "intra_fd", lambda feature, detach_salient=False: feature.sum() * 0 + 7.0)
    monkeypatch.setattr(losses.tffd, "inter_fd", lambda shallow, deep: shallow.sum() * 0 + 3.0)
    after = term(step)
    assert before["tffd_intra"].item() != 7.0 and after["tffd_intra"].item() == 7.0
    assert before["tffd_inter"].item() != 3.0 and after["tffd_inter"].item() == 3.0


def test_salience_builds_no_autograd_graph():
    f = three_stage_feats()[0]
    salience = channel_salience(f)
    assert not salience.requires_grad and salience.grad_fn is None


@pytest.mark.parametrize(
    "data, message",
    [
        ({"stages": [1, 2, 2]}, "loss.tffd.stages lists 2 twice"),
        ({"pairs": [[1, 2], [1, 2]]}, "loss.tffd.pairs lists [1, 2] twice"),
        ({"pairs": [[2, 1]]}, "shallow < deep"),
        ({"pairs": []}, "loss.tffd.pairs is empty"),
        ({"stages": []}, "loss.tffd.stages is empty"),
        ({"stages": [0, 1]}, "loss.tffd.stages[0] must be >= 1, got 0"),
        ({"lambda_inter": float("nan")}, "loss.tffd.lambda_inter must be a finite number, got nan"),
        ({"warmup_epochs": -1}, "loss.tffd.warmup_epochs must be >= 0, got -1"),
    ],
)
def test_bad_tffd_options_are_config_errors(data, message):
    with pytest.raises(ConfigError) as error:
        build(TfFDConfig, data, prefix="loss.tffd.")
    assert message in str(error.value)


def test_a_one_channel_stage_is_a_config_error_for_intra_only():
    shapes = [(1, 8, 8), (4, 4, 4)]
    with pytest.raises(ConfigError, match="stage 1 has 1 channel"):
        TeacherFreeFD(TfFDConfig()).check_features(shapes)
    TeacherFreeFD(TfFDConfig(lambda_intra=0.0)).check_features(shapes)
    TeacherFreeFD(TfFDConfig(stages=[2], pairs=[[1, 2]])).check_features(shapes)


def test_the_term_compiles_without_graph_breaks():
    """torch.compile traces the whole term (sort and index_select included) as one graph."""
    term = TeacherFreeFD(TfFDConfig(warmup_epochs=20))
    step = StepOutput(torch.zeros(4, 10), three_stage_feats(), torch.zeros(4, dtype=torch.long), 3)
    explanation = torch._dynamo.explain(term)(step)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
