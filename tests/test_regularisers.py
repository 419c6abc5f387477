"""Output regularisers of the self-KD table, on hand-computed tensors: the focal loss (in place of CE)
and the confidence penalty (maximum entropy, beside CE), values, gradients, mixed labels, configs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from losses import LOSSES, StepOutput
from losses.focal import FocalConfig, FocalLoss, focal_loss
from losses.max_entropy import ConfidencePenalty, MaxEntropyConfig, entropy

from conftest import REPO, method_config

LOGITS = [[1.0, -0.5, 2.0], [0.0, 0.3, -1.0]]
TARGETS = torch.tensor([2, 0])


def probs_by_hand(rows):
    out = []
    for row in rows:
        exps = [math.exp(v) for v in row]
        out.append([e / sum(exps) for e in exps])
    return torch.tensor(out)


def load_method(method, tmp_path):
    return method_config(tmp_path, method)


def load_selfkd(method):
    from engine.config import load_config

    selfkd = REPO / "configs/cifar100/selfkd"
    return [load_config(selfkd / f"cifar_resnet18_{method}{suffix}.yaml") for suffix in ("", "_tffd")]


# ---------------------------------------------------------------- focal loss
def test_focal_value_and_gradient_by_hand():
    logits = torch.tensor(LOGITS, requires_grad=True)
    out = FocalLoss(FocalConfig(gamma=2.0))(StepOutput(logits, [], TARGETS, 1))
    assert set(out) == {"focal"}
    p = probs_by_hand(LOGITS)
    p_y = p[[0, 1], TARGETS]
    torch.testing.assert_close(out["focal"], (-((1 - p_y) ** 2) * p_y.log()).mean())
    out["focal"].backward()
    # d FL_n / d p_y = 2 (1 - p_y) log p_y - (1 - p_y)^2 / p_y and d p_y / d z_c = p_y (onehot_c - p_c)
    d_p = 2 * (1 - p_y) * p_y.log() - (1 - p_y) ** 2 / p_y
    expected = (d_p * p_y)[:, None] * (F.one_hot(TARGETS, 3) - p) / 2
    torch.testing.assert_close(logits.grad, expected)


def test_focal_with_gamma_zero_is_the_cross_entropy():
    logits = torch.randn(6, 5)
    targets = torch.randint(0, 5, (6,))
    torch.testing.assert_close(focal_loss(logits, targets, 0.0), F.cross_entropy(logits, targets))


def test_focal_with_mixed_labels_is_the_label_mixture_of_the_focal_losses():
    torch.manual_seed(0)
    logits, a, b, lam = torch.randn(5, 7), torch.randint(0, 7, (5,)), torch.randint(0, 7, (5,)), 0.3
    mixed = lam * F.one_hot(a, 7).float() + (1 - lam) * F.one_hot(b, 7).float()
    term = FocalLoss(FocalConfig())
    loss = term(StepOutput(logits, [], a, 1, target_probs=mixed))["focal"]
    torch.testing.assert_close(loss, lam * focal_loss(logits, a, 2.0) + (1 - lam) * focal_loss(logits, b, 2.0))
    # a one-hot distribution gives the hard-label loss, value and gradient
    z1, z2 = (logits.clone().requires_grad_(True) for _ in range(2))
    hard, soft = focal_loss(z1, a, 2.0), focal_loss(z2, F.one_hot(a, 7).float(), 2.0)
    torch.testing.assert_close(soft, hard)
    hard.backward()
    soft.backward()
    torch.testing.assert_close(z2.grad, z1.grad)
    # by hand for one sample: sum_c q_c * -(1 - p_c)^2 log p_c
    q = torch.tensor([[0.25, 0.0, 0.75]])
    p = probs_by_hand(LOGITS[:1])
    expected = (q * -((1 - p) ** 2) * p.log()).sum()
    torch.testing.assert_close(focal_loss(torch.tensor(LOGITS[:1]), q, 2.0), expected)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_stays_finite_on_a_sample_it_already_gets_right(gamma):
    logits = torch.tensor([[200.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)  # log p_0 rounds to 0
    loss = focal_loss(logits, torch.tensor([0, 1]), gamma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    torch.testing.assert_close(logits.grad[0], torch.zeros(3))


def test_focal_configs_hold_self_kd_libs_settings(tmp_path):
    assert LOSSES.lookup("focal").term is FocalLoss
    config = load_method("focal", tmp_path)
    assert (config.loss.terms, config.loss.focal.gamma) == (["focal"], 2.0)  # it replaces CE
    assert FocalConfig().gamma == 2.0
    alone, with_tffd = load_selfkd("focal")
    assert (alone.model.name, alone.loss.terms, alone.loss.focal.gamma) == ("cifar_resnet18", ["focal"], 2.0)
    assert with_tffd.loss.terms == ["focal", "tffd"]
    with pytest.raises(ConfigError, match="gamma must be >= 0"):
        FocalConfig(gamma=-0.5)


# ---------------------------------------------------------------- confidence penalty (maximum entropy)
def test_entropy_and_the_penalty_value_and_gradient_by_hand():
    torch.testing.assert_close(entropy(torch.zeros(1, 4)), torch.tensor(math.log(4)))
    logits = torch.tensor(LOGITS, requires_grad=True)
    out = ConfidencePenalty(MaxEntropyConfig(beta=0.3))(StepOutput(logits, [], TARGETS, 1))
    assert set(out) == {"max_entropy"}
    p = probs_by_hand(LOGITS)
    h = -(p * p.log()).sum(1)  # per sample
    torch.testing.assert_close(out["max_entropy"], -0.3 * h.mean())
    out["max_entropy"].backward()
    # d H_n / d z_c = -p_c (log p_c + H_n); the term is -beta * mean_n H_n, nothing detached
    torch.testing.assert_close(logits.grad, 0.3 * p * (p.log() + h[:, None]) / 2)


def test_beta_0_005_is_self_kd_libs_half_of_the_elementwise_mean_at_100_classes():
    torch.manual_seed(0)
    logits = torch.randn(8, 100) * 3
    self_kd_lib = 0.5 * (F.softmax(logits, 1) * F.log_softmax(logits, 1)).mean()  # its "entropy" is -H / K
    term = ConfidencePenalty(MaxEntropyConfig())(StepOutput(logits, [], torch.zeros(8, dtype=torch.long), 1))
    torch.testing.assert_close(term["max_entropy"], self_kd_lib)
    assert self_kd_lib < 0  # a confident output costs more: the penalty rewards entropy


def test_the_penalty_ignores_labels_mixed_or_not():
    logits = torch.randn(3, 4)
    term = ConfidencePenalty(MaxEntropyConfig(beta=1.0))
    plain = term(StepOutput(logits, [], torch.tensor([0, 1, 2]), 1))["max_entropy"]
    mixed = term(StepOutput(logits, [], torch.tensor([3, 3, 3]), 1, target_probs=torch.full((3, 4), 0.25)))
    torch.testing.assert_close(mixed["max_entropy"], plain)


def test_max_entropy_configs_hold_self_kd_libs_settings(tmp_path):
    assert LOSSES.lookup("max_entropy").term is ConfidencePenalty
    config = load_method("max_entropy", tmp_path)
    assert (config.loss.terms, config.loss.max_entropy.beta, config.loss.ce.weight) == (
        ["ce", "max_entropy"],
        0.005,
        1.0,
    )
    assert MaxEntropyConfig().beta == 0.005
    alone, with_tffd = load_selfkd("max_entropy")
    assert (alone.model.name, alone.loss.terms, alone.loss.max_entropy.beta) == (
        "cifar_resnet18",
        ["ce", "max_entropy"],
        0.005,
    )
    assert with_tffd.loss.terms == ["ce", "max_entropy", "tffd"]
    with pytest.raises(ConfigError, match="beta must be >= 0"):
        MaxEntropyConfig(beta=-0.1)
