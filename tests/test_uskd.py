"""USKD (losses/uskd.py): each part on hand-computed tensors, value and gradient and what is detached,
mixed labels, the weak head and its stage, and the configs' settings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from losses import StepOutput
from losses.uskd import (
    UniversalSelfKD,
    USKDConfig,
    label_classes,
    non_target_loss,
    rank_scores,
    target_loss,
    uskd_loss,
    weak_loss,
    zipf_weights,
)
from losses.zipf_ls import non_target_columns

from conftest import REPO, attached, method_config


# ---------------------------------------------------------------- the target part
def test_target_part_by_hand_with_a_detached_soft_target():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 2])
    s = logits.detach().softmax(1)
    s_y = s[[0, 1], [0, 2]]
    p_t = s_y**2 + 1 - (s_y**2).mean()  # the batch mean of s_y^2
    classes, values = label_classes(targets, None)
    loss = target_loss(logits, classes, values)
    torch.testing.assert_close(loss, -(p_t * s_y.log()).mean())
    loss.backward()
    # p_t is a constant: d/dz of -p_t log s_y is p_t (s - onehot), over the batch of 2
    torch.testing.assert_close(logits.grad, p_t[:, None] * (s - F.one_hot(targets, 3)) / 2)


# ---------------------------------------------------------------- the weak head's label-smoothed CE
def test_weak_part_is_ce_against_0_9_onehot_plus_0_1_over_k():
    weak = torch.tensor([[0.3, -0.2, 1.0, 0.0]], requires_grad=True)
    q = torch.tensor([[0.025, 0.025, 0.925, 0.025]])  # 0.9 on the label, 0.1 / 4 everywhere
    loss = weak_loss(weak, F.one_hot(torch.tensor([2]), 4))
    torch.testing.assert_close(loss, -(q * weak.detach().log_softmax(1)).sum())
    loss.backward()
    torch.testing.assert_close(weak.grad, weak.detach().softmax(1) - q)


# ---------------------------------------------------------------- the non-target part
WEAK_PROBS = torch.tensor([[0.1, 0.2, 0.3, 0.4]])  # the weak head ranks 3, 2, 1, 0
FINAL_PROBS = torch.tensor([[0.7, 0.2, 0.06, 0.04]])  # the final layer ranks 0, 1, 2, 3


def test_rank_scores_code_adds_final_log_probs_paper_uses_the_weak_head_alone():
    weak, logits, classes = WEAK_PROBS.log(), FINAL_PROBS.log(), torch.tensor([[0]])
    paper = rank_scores(logits, weak, classes, "paper")
    torch.testing.assert_close(paper, WEAK_PROBS / (1 - 0.1 + 1e-6))
    code = rank_scores(logits, weak, classes, "code")
    log_p = FINAL_PROBS.log()
    torch.testing.assert_close(code, WEAK_PROBS / (1 - 0.1 + 1e-6) + log_p / (1 - math.log(0.7) + 1e-6))
    # w / 0.9 + log p / 1.357: class 0 -0.15, class 1 -0.96, class 2 -1.74, class 3 -1.93
    assert torch.argsort(code, descending=True).tolist() == [[0, 1, 2, 3]]
    assert torch.argsort(paper, descending=True).tolist() == [[3, 2, 1, 0]]
    # the class at rank r gets 1 / r
    torch.testing.assert_close(zipf_weights(code), torch.tensor([[1, 1 / 2, 1 / 3, 1 / 4]]))
    torch.testing.assert_close(zipf_weights(paper), torch.tensor([[1 / 4, 1 / 3, 1 / 2, 1]]))


def test_ranks_carry_no_gradient():
    logits, weak = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True)
    weights = zipf_weights(rank_scores(logits, weak, torch.tensor([[0], [1], [2]]), "code"))
    assert not weights.requires_grad


def test_non_target_part_by_hand():
    logits = torch.tensor([[1.0, 0.5, -0.5, 2.0]], requires_grad=True)
    weights = torch.tensor([[1, 1 / 2, 1 / 3, 1 / 4]], requires_grad=True)  # any gradient would be a bug
    classes = torch.tensor([[0]])
    nz = torch.tensor([1 / 2, 1 / 3, 1 / 4]) / (13 / 12)  # y dropped, renormalised: 6/13, 4/13, 3/13
    non_target = logits.detach()[0, 1:].softmax(0)
    loss = non_target_loss(logits, classes, weights)
    torch.testing.assert_close(loss, -(nz * non_target.log()).sum())
    loss.backward()
    assert weights.grad is None
    torch.testing.assert_close(logits.grad, torch.cat([torch.zeros(1), non_target - nz])[None])  # none on y


def test_non_target_columns_keep_the_other_classes_in_order():
    x = torch.arange(10.0).view(2, 5)
    assert non_target_columns(x, torch.tensor([[3], [0]])).tolist() == [[0, 1, 2, 4], [6, 7, 8, 9]]
    assert non_target_columns(x, torch.tensor([[3, 1], [2, 0]])).tolist() == [[0, 2, 4], [6, 8, 9]]


# ---------------------------------------------------------------- the whole loss
def test_uskd_loss_weights_its_parts_and_the_weak_logits_learn_only_from_their_ce():
    torch.manual_seed(0)
    logits, weak = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    targets = torch.tensor([0, 5, 2, 2])
    parts = uskd_loss(logits, weak, targets, None, alpha=0.5, beta=0.3, mu=0.2)
    classes, values = label_classes(targets, None)
    weights = zipf_weights(rank_scores(logits, weak, classes, "code"))
    torch.testing.assert_close(parts.target, 0.5 * target_loss(logits, classes, values))
    torch.testing.assert_close(parts.non_target, 0.3 * non_target_loss(logits, classes, weights))
    torch.testing.assert_close(parts.weak, 0.2 * weak_loss(weak, F.one_hot(targets, 6)))
    sum(parts).backward()
    q = 0.9 * F.one_hot(targets, 6) + 0.1 / 6
    torch.testing.assert_close(weak.grad, 0.2 * (weak.detach().softmax(1) - q) / 4)  # the rank adds nothing


# ---------------------------------------------------------------- mixed labels: the top-2 classes
MIXED = torch.tensor(
    [
        [0.0, 0.3, 0.0, 0.7, 0.0],  # a mix of classes 3 and 1
        [0.0, 0.0, 1.0, 0.0, 0.0],
    ]
)  # two images of class 2: the second class has no mass


def test_mixed_labels_stand_in_their_two_most_probable_classes():
    classes, values = label_classes(torch.tensor([3, 2]), MIXED)
    assert classes.tolist() == [[3, 1], [2, 0]]  # stable: the lowest-indexed zero class second
    torch.testing.assert_close(values, torch.tensor([[0.7, 0.3], [1.0, 0.0]]))


def test_target_part_under_mixed_labels_by_hand():
    logits = torch.tensor([[0.2, 1.0, -0.3, 0.8, 0.0], [0.1, -0.4, 1.5, 0.0, 0.3]], requires_grad=True)
    classes, values = label_classes(torch.tensor([3, 2]), MIXED)
    s = logits.detach().softmax(1)
    s_c = torch.stack([s[0, [3, 1]], s[1, [2, 0]]])
    p_t = s_c**2 + values - (s_c**2).mean(0)  # per column, over the batch
    p_t[1, 1] = 0  # no label mass on the second class of sample 1
    loss = target_loss(logits, classes, values)
    torch.testing.assert_close(loss, -(p_t * s_c.log()).sum(1).mean())
    loss.backward()
    onehots = torch.zeros(2, 2, 5).scatter(2, classes[..., None], 1)  # sample, class slot, K
    expected = (p_t[..., None] * (s[:, None] - onehots)).sum(1) / 2
    torch.testing.assert_close(logits.grad, expected)


def test_mixed_labels_drop_both_classes_from_the_non_target_part_and_smooth_the_mix_for_the_weak_head():
    torch.manual_seed(1)
    logits, weak = torch.randn(2, 5), torch.randn(2, 5)
    parts = uskd_loss(logits, weak, torch.tensor([3, 2]), MIXED, alpha=1.0, beta=1.0, mu=1.0)
    ranks = zipf_weights(rank_scores(logits, weak, torch.tensor([[3, 1], [2, 0]]), "code"))
    kept = [[0, 2, 4], [1, 3, 4]]
    expected = 0.0
    for n in range(2):
        nz = ranks[n, kept[n]] / ranks[n, kept[n]].sum()
        expected += -(nz * logits[n, kept[n]].log_softmax(0)).sum() / 2
    torch.testing.assert_close(parts.non_target, expected)
    q = 0.9 * MIXED + 0.1 / 5
    torch.testing.assert_close(parts.weak, -(q * weak.log_softmax(1)).sum(1).mean())
    # the rank score divides by one minus the two classes' summed weak probability and log-probability
    w, log_p = weak.softmax(1), logits.log_softmax(1)
    score = (w / (1 - (w[0, 3] + w[0, 1]) + 1e-6) + log_p / (1 - (log_p[0, 3] + log_p[0, 1]) + 1e-6))[0]
    torch.testing.assert_close(rank_scores(logits, weak, torch.tensor([[3, 1], [2, 0]]), "code")[0], score)


# ---------------------------------------------------------------- the term: the weak head and its stage
SHAPES = ((8, 8, 8), (16, 4, 4), (32, 2, 2))  # three stages, shallow to deep


def uskd(shapes=SHAPES, num_classes=5, **options) -> UniversalSelfKD:
    return attached(UniversalSelfKD(USKDConfig(**options)), shapes, num_classes, num_samples=10)


def test_the_weak_head_is_a_trained_linear_layer_on_the_pooled_second_deepest_stage():
    torch.manual_seed(0)
    term = uskd(alpha=1.0, beta=0.5, mu=0.25)
    assert (term.weak_head.in_features, term.weak_head.out_features) == (16, 5) and term.stage_index == 1
    assert sum(p.numel() for p in term.parameters()) == 16 * 5 + 5
    feats = [torch.randn(3, *shape, requires_grad=True) for shape in SHAPES]
    logits, targets = torch.randn(3, 5, requires_grad=True), torch.tensor([0, 4, 1])
    losses = term(StepOutput(logits, feats, targets, 1))
    assert set(losses) == {"uskd_target", "uskd_non_target", "uskd_weak"}
    weak_logits = term.weak_head(feats[1].detach().mean(dim=(2, 3)))
    expected = uskd_loss(logits, weak_logits, targets, None, 1.0, 0.5, 0.25)
    for name, part in zip(("uskd_target", "uskd_non_target", "uskd_weak"), expected):
        torch.testing.assert_close(losses[name], part)
    sum(losses.values()).backward()
    assert term.weak_head.weight.grad.abs().sum() > 0
    assert feats[1].grad.abs().sum() > 0  # not detached: the weak head trains the earlier stages too
    assert feats[0].grad is None and feats[2].grad is None


def test_the_stage_option_counts_from_the_deepest():
    assert uskd(stage=-3).stage_index == 0 and uskd(stage=-3).weak_head.in_features == 8
    assert uskd(stage=-1).stage_index == 2 and uskd(stage=-1).weak_head.in_features == 32  # mobilenetv2_imagenet's


@pytest.mark.parametrize(
    "shapes, stage, message",
    [
        (((8, 4, 4),), -2, "the model has one stage"),
        (SHAPES, -4, r"loss.uskd.stage=-4 is beyond the shallowest of this model's 3 stages; use -3..-1"),
    ],
)
def test_stages_that_do_not_fit_the_model_are_config_errors(shapes, stage, message):
    with pytest.raises(ConfigError, match=message):
        UniversalSelfKD(USKDConfig(stage=stage)).check_features(shapes)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="rank_from must be one of code, paper"):
        USKDConfig(rank_from="weak")
    with pytest.raises(ConfigError, match="mu must be >= 0"):
        USKDConfig(mu=-0.1)
    with pytest.raises(ConfigError, match="stage must be <= -1, got 0"):  # counted from the deepest, -1
        USKDConfig(stage=0)


def test_the_term_passes_the_mixed_labels_on():
    torch.manual_seed(0)
    term = uskd(rank_from="paper")
    feats = [torch.randn(2, *shape) for shape in SHAPES]
    logits = torch.randn(2, 5)
    losses = term(StepOutput(logits, feats, torch.tensor([3, 2]), 1, target_probs=MIXED))
    weak_logits = term.weak_head(feats[1].mean(dim=(2, 3)))
    expected = uskd_loss(logits, weak_logits, torch.tensor([3, 2]), MIXED, 0.1, 0.1, 0.1, "paper")
    torch.testing.assert_close(losses["uskd_non_target"], expected.non_target)


# ---------------------------------------------------------------- configs
def test_method_config_holds_the_cifar_100_settings(tmp_path):
    from engine.config import load_config

    config = method_config(tmp_path, "uskd")
    assert config.loss.terms == ["ce", "uskd"]
    assert USKDConfig() == config.loss.uskd == USKDConfig(alpha=0.1, beta=0.1, mu=0.1, stage=-2, rank_from="code")
    for name, terms in (("cifar_resnet18_uskd", ["ce", "uskd"]), ("cifar_resnet18_uskd_tffd", ["ce", "uskd", "tffd"])):
        config = load_config(REPO / f"configs/cifar100/selfkd/{name}.yaml")
        assert (config.loss.terms, config.model.name, config.train.epochs) == (terms, "cifar_resnet18", 200)
        assert config.loss.uskd == USKDConfig()
