"""Zipf's label smoothing (losses/zipf_ls.py): the ranks with ties, the per-pixel votes, the Zipf target
and the loss by hand (value and gradient, with the votes and the target logit out of the gradient), the
term on real backbones' head maps, and the configs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import ConfigError
from engine.config import load_config
from losses import StepOutput
from losses.zipf_ls import (
    ZipfLabelSmoothing,
    ZipfLSConfig,
    final_linear,
    non_target_columns,
    pixel_votes,
    rank_min,
    zipf_kl,
    zipf_target,
)
from models import MODELS, build_model

from conftest import REPO, method_config


# ---------------------------------------------------------------- the pure functions, by hand
def test_rank_is_one_for_the_most_votes_and_ties_share_the_smallest_rank():
    votes = torch.tensor(
        [
            [3.0, 0.0, 5.0, 0.0, 3.0, 1.0],  # 5 > 3 = 3 > 1 > 0 = 0
            [2.0, 2.0, 2.0, 2.0, 2.0, 2.0],  # all tied
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        ]
    )  # no ties
    assert rank_min(votes).tolist() == [[2, 5, 1, 5, 2, 4], [1] * 6, [6, 5, 4, 3, 2, 1]]
    assert torch.equal(rank_min(votes.long()), rank_min(votes))  # counts as integers or floats


def hand_classifier() -> nn.Linear:
    """2 channels -> 3 classes: class 0 scores channel 0, class 1 channel 1, class 2 a constant 0.8."""
    linear = nn.Linear(2, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        linear.bias.copy_(torch.tensor([0.0, 0.0, 0.8]))
    return linear


def test_every_pixel_votes_for_its_argmax_class():
    # 1 x 2 x 2 x 2: pixels (1, 0) -> class 0, (0, 1) -> 1, (0.5, 0.5) -> 2 (0.8 > 0.5), (0.9, 0.2) -> 0
    head_map = torch.tensor([[[1.0, 0.0], [0.5, 0.9]], [[0.0, 1.0], [0.5, 0.2]]])[None]
    assert pixel_votes(head_map, hand_classifier()).tolist() == [[2.0, 1.0, 1.0]]


def test_the_map_is_upsampled_bilinearly_before_it_votes():
    # A 1 x 2 map a = (1, 0), b = (0, 1) upsampled x2 (corners not aligned): every row reads
    # a, 0.75 a + 0.25 b, 0.25 a + 0.75 b, b, twice over: class 0, 2, 2, 1 (0.8 beats 0.75).
    head_map = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])[None]
    assert pixel_votes(head_map, hand_classifier()).tolist() == [[1.0, 1.0, 0.0]]
    assert pixel_votes(head_map, hand_classifier(), upsample=2).tolist() == [[2.0, 2.0, 4.0]]


def test_zipf_target_is_one_over_the_rank_over_the_non_target_classes():
    votes = torch.tensor([[3.0, 0.0, 5.0, 0.0, 3.0, 1.0]] * 2)  # ranks 2, 5, 1, 5, 2, 4
    q = zipf_target(votes, torch.tensor([2, 1]))  # the top class is the label; a class without votes is
    first = torch.tensor([1 / 2, 1 / 5, 0, 1 / 5, 1 / 2, 1 / 4])
    second = torch.tensor([1 / 2, 0, 1, 1 / 5, 1 / 2, 1 / 4])
    torch.testing.assert_close(q, torch.stack([first / 1.65, second / 2.45]))
    squared = zipf_target(votes, torch.tensor([2, 1]), power=2.0)
    torch.testing.assert_close(squared[0], first**2 / (first**2).sum())
    assert torch.equal(
        zipf_target(votes, torch.tensor([2, 1]), power=0.0)[0], torch.tensor([0.2, 0.2, 0, 0.2, 0.2, 0.2])
    )


def test_non_target_drops_the_target_column_and_keeps_the_order():
    values = torch.arange(8.0).view(2, 4)
    assert non_target_columns(values, torch.tensor([[0], [2]])).tolist() == [[1, 2, 3], [4, 5, 7]]


def test_kl_to_the_softmax_of_the_non_target_logits_value_and_gradient():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.3, 1.2, 0.7, -0.4]], requires_grad=True)
    targets = torch.tensor([0, 2])
    q = torch.tensor([[0.0, 0.5, 0.2, 0.3], [0.1, 0.6, 0.0, 0.3]], requires_grad=True)
    loss = zipf_kl(logits, q, targets)
    # The softmax over the three other logits, written out.
    p0 = torch.tensor([0.5, -1.0, 0.0]).exp() / torch.tensor([0.5, -1.0, 0.0]).exp().sum()
    p1 = torch.tensor([0.3, 1.2, -0.4]).exp() / torch.tensor([0.3, 1.2, -0.4]).exp().sum()
    q0, q1 = torch.tensor([0.5, 0.2, 0.3]), torch.tensor([0.1, 0.6, 0.3])
    expected = ((q0 * (q0 / p0).log()).sum() + (q1 * (q1 / p1).log()).sum()) / 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    # d/dz_c = (p_c - q_c) / N on the non-target logits; nothing reaches the target logit or q.
    expected_grad = (
        torch.stack(
            [torch.cat([torch.zeros(1), p0 - q0]), torch.cat([p1[:2] - q1[:2], torch.zeros(1), p1[2:] - q1[2:]])]
        )
        / 2
    )
    torch.testing.assert_close(logits.grad, expected_grad)
    assert q.grad is None


# ---------------------------------------------------------------- the term
class TinyNet(nn.Module):
    """Stands in for a model: its classifier is the hand-built one."""

    def __init__(self):
        super().__init__()
        self.fc = hand_classifier()


def test_term_is_lambda_times_the_kl_to_the_target_from_the_votes_and_the_votes_carry_no_gradient():
    head_map = torch.tensor([[[1.0, 0.0], [0.5, 0.9]], [[0.0, 1.0], [0.5, 0.2]]])[None].requires_grad_()
    logits = torch.tensor([[0.2, 1.0, -0.5]], requires_grad=True)
    targets = torch.tensor([1])
    term = ZipfLabelSmoothing(ZipfLSConfig(weight=0.5, upsample=1))
    loss = term(StepOutput(logits, [], targets, 1, model=TinyNet(), head_map=head_map))["zipf_ls"]
    # votes 2, 1, 1 -> ranks 1, 2, 2; label 1 -> q = (1, 0, 1/2) / 1.5
    q = torch.tensor([[2 / 3, 0.0, 1 / 3]])
    torch.testing.assert_close(loss, 0.5 * zipf_kl(logits.detach(), q, targets))
    loss.backward()
    assert head_map.grad is None  # the votes are no path for the gradient
    assert logits.grad[0, 1] == 0 and logits.grad[0, [0, 2]].abs().min() > 0


def test_mixed_labels_leave_out_their_largest_class():
    head_map, logits = torch.randn(2, 2, 3, 3), torch.randn(2, 3)
    mixed = torch.tensor([[0.3, 0.7, 0.0], [0.0, 0.4, 0.6]])
    term = ZipfLabelSmoothing(ZipfLSConfig())
    got = term(StepOutput(logits, [], torch.tensor([0, 1]), 1, target_probs=mixed, model=TinyNet(), head_map=head_map))
    want = term(StepOutput(logits, [], torch.tensor([1, 2]), 1, model=TinyNet(), head_map=head_map))
    torch.testing.assert_close(got["zipf_ls"], want["zipf_ls"])


@pytest.mark.parametrize("name", ["resnet20", "cifar_resnet18"])
def test_term_on_a_real_backbones_head_map(name):
    """3 stages (ResNet-20, 64 x 8 x 8 head map) and 4 (CIFAR ResNet-18, 512 x 4 x 4): the votes come from
    the model's own classifier on the x2-upsampled map, and the gradient only through the logits."""
    torch.manual_seed(0)
    model = build_model(name, 10)
    feats, head_map = model.forward_maps(torch.randn(3, 3, 32, 32))
    logits = model.classify_map(head_map)
    targets = torch.tensor([0, 4, 9])
    loss = ZipfLabelSmoothing(ZipfLSConfig())(StepOutput(logits, feats, targets, 1, model=model, head_map=head_map))[
        "zipf_ls"
    ]
    with torch.no_grad():
        up = F.interpolate(head_map, scale_factor=2, mode="bilinear", align_corners=False)
        pixel_logits = torch.einsum("ndhw,kd->nhwk", up, model.fc.weight) + model.fc.bias
        votes = F.one_hot(pixel_logits.argmax(-1).flatten(1), 10).sum(1).float()
    assert votes.sum(1).tolist() == [4.0 * head_map.shape[2] * head_map.shape[3]] * 3
    torch.testing.assert_close(loss, 0.1 * zipf_kl(logits.detach(), zipf_target(votes, targets), targets))
    (grad,) = torch.autograd.grad(loss, head_map)
    # the same gradient as with the target a constant: the votes add nothing to it
    (expected,) = torch.autograd.grad(
        0.1 * zipf_kl(model.classify_map(head_map), zipf_target(votes, targets), targets), head_map
    )
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_pixels_are_classified_by_the_classifier_classify_map_applies(name):
    """On every backbone, the layer the votes use is the classifier: as it is affine, the mean of the
    pixels' logits is the model's logit of the pooled map (in eval mode: no dropout)."""
    torch.manual_seed(0)
    model = build_model(name, 7).eval()
    with torch.no_grad():
        _, head_map = model.forward_maps(torch.randn(2, 3, 32, 32))
        if head_map.shape[-1] == 1:  # an ImageNet model: at least 2 x 2 pixels
            _, head_map = model.forward_maps(torch.randn(2, 3, 64, 64))
        linear = final_linear(model, head_map.shape[1], 7)
        pixel_logits = linear(head_map.permute(0, 2, 3, 1).flatten(0, 2)).view(2, -1, 7)
        torch.testing.assert_close(pixel_logits.mean(1), model.classify_map(head_map), rtol=1e-4, atol=1e-5)


def test_a_step_without_a_head_map_or_a_classifier_fails_clearly():
    term = ZipfLabelSmoothing(ZipfLSConfig())
    with pytest.raises(RuntimeError, match="head map"):
        term(StepOutput(torch.randn(2, 3), [], torch.tensor([0, 1]), 1, model=TinyNet()))
    with pytest.raises(RuntimeError, match=r"no nn.Linear\(5 -> 3\)"):
        term(
            StepOutput(
                torch.randn(2, 3), [], torch.tensor([0, 1]), 1, model=TinyNet(), head_map=torch.randn(2, 5, 2, 2)
            )
        )


# ---------------------------------------------------------------- configs
def test_method_config_holds_the_authors_cifar_settings(tmp_path):
    config = method_config(tmp_path, "zipf_ls")
    assert config.loss.terms == ["ce", "zipf_ls"] and config.loss.ce.weight == 1.0
    zipf = config.loss.zipf_ls
    assert (zipf.weight, zipf.power, zipf.upsample, zipf.upsample_mode) == (0.1, 1.0, 2, "bilinear")
    alone = load_config(REPO / "configs/cifar100/selfkd/cifar_resnet18_zipf_ls.yaml")
    with_tffd = load_config(REPO / "configs/cifar100/selfkd/cifar_resnet18_zipf_ls_tffd.yaml")
    assert (alone.model.name, alone.loss.terms, alone.loss.zipf_ls.weight) == ("cifar_resnet18", ["ce", "zipf_ls"], 0.1)
    assert with_tffd.loss.terms == ["ce", "zipf_ls", "tffd"] and with_tffd.loss.zipf_ls == alone.loss.zipf_ls


@pytest.mark.parametrize(
    "options, message",
    [
        ({"weight": -0.1}, "weight"),
        ({"power": -1.0}, "power"),
        ({"upsample": 0}, "upsample"),
        ({"upsample_mode": "nearest"}, "upsample_mode"),
    ],
)
def test_options_out_of_range_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        ZipfLSConfig(**options)
