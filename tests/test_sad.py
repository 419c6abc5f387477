"""SAD (self-attention distillation) on hand-computed tensors: the attention map, upsampling the
deeper feature before its map is taken, what is detached, the term, its configs and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from losses import LOSSES, StepOutput
from losses.sad import SADConfig, SelfAttentionDistillation, attention_map, sad_loss

from conftest import REPO, method_config


def feature(values, n=1, c=1, h=1, w=2, grad=True):
    return torch.tensor(values, dtype=torch.float32).view(n, c, h, w).clone().requires_grad_(grad)


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_attention_map_is_the_spatial_softmax_of_the_channel_mean_of_squares():
    # channels [1, 2] and [3, 0]: mean of squares per position (1 + 9) / 2 = 5, (4 + 0) / 2 = 2
    f = feature([[1.0, 2.0], [3.0, 0.0]], c=2, grad=False)
    torch.testing.assert_close(attention_map(f), torch.tensor(softmax([5.0, 2.0])).view(1, 1, 2))
    g = torch.randn(3, 4, 5, 6)
    a = attention_map(g)
    assert a.shape == (3, 5, 6) and torch.allclose(a.sum(dim=(1, 2)), torch.ones(3))


def test_the_deeper_feature_is_upsampled_before_its_map_is_taken():
    # deep 1 x 2 = [-1, 1], bilinear (align_corners=False) to 2 x 4: every row [-1, -0.5, 0.5, 1]; its
    # squares [1, .25, .25, 1] differ from upsampling the squares [1, 1] (which gives a uniform map)
    shallow = torch.zeros(1, 1, 2, 4)  # uniform map 1/8
    deep = feature([-1.0, 1.0], grad=False)
    target = torch.tensor(softmax([1.0, 0.25, 0.25, 1.0] * 2))
    expected = ((1 / 8 - target) ** 2).mean()
    torch.testing.assert_close(sad_loss([shallow, deep]), expected)
    assert not torch.allclose(expected, torch.tensor(0.0))


def test_value_and_gradient_by_hand_and_the_deeper_stage_gets_none():
    # shallow 2 x 2 = [[1, 0], [0, 2]]; deep 1 x 1 upsamples to a constant, whose map is uniform (1/4)
    shallow = feature([1.0, 0.0, 0.0, 2.0], h=2, w=2)
    deep = feature([3.0], h=1, w=1)
    a = torch.tensor(softmax([1.0, 0.0, 0.0, 4.0]))  # squares of the shallow feature
    loss = sad_loss([shallow, deep])
    torch.testing.assert_close(loss, ((a - 0.25) ** 2).mean())
    grad_shallow, grad_deep = torch.autograd.grad(loss, [shallow, deep], allow_unused=True)
    assert grad_deep is None  # sg: the deeper stage teaches and is not taught
    d_a = 2 * (a - 0.25) / 4  # d mean((a - t)^2) / da
    d_s = a * (d_a - (a * d_a).sum())  # back through the softmax
    d_f = d_s * 2 * torch.tensor([1.0, 0.0, 0.0, 2.0])  # d (f^2) / df, one channel
    torch.testing.assert_close(grad_shallow, d_f.view(1, 1, 2, 2))


def test_consecutive_pairs_are_summed_and_each_stage_learns_only_as_the_shallower_of_its_pair():
    torch.manual_seed(0)
    f1, f2, f3 = (torch.randn(2, c, s, s, requires_grad=True) for c, s in ((3, 8), (5, 4), (7, 2)))
    loss = sad_loss([f1, f2, f3])
    torch.testing.assert_close(loss, sad_loss([f1, f2]) + sad_loss([f2, f3]))
    g1, g2, g3 = torch.autograd.grad(loss, [f1, f2, f3], allow_unused=True)
    assert g3 is None
    torch.testing.assert_close(g2, torch.autograd.grad(sad_loss([f2, f3]), f2)[0])  # not from pair (1, 2)
    torch.testing.assert_close(g1, torch.autograd.grad(sad_loss([f1, f2]), f1)[0])


def test_an_exact_2x_step_matches_self_kd_libs_fixed_factor_and_other_sizes_work():
    torch.manual_seed(0)
    shallow, deep = torch.randn(2, 3, 8, 8), torch.randn(2, 6, 4, 4)
    up = F.interpolate(deep, scale_factor=2.0, mode="bilinear", align_corners=False)
    torch.testing.assert_close(sad_loss([shallow, deep]), (attention_map(shallow) - attention_map(up)).pow(2).mean())
    same = torch.randn(2, 6, 8, 8)  # equal resolutions: no resizing
    torch.testing.assert_close(sad_loss([shallow, same]), (attention_map(shallow) - attention_map(same)).pow(2).mean())
    odd = torch.randn(2, 6, 3, 3)  # 3 -> 5 is not a 2x step
    resized = F.interpolate(odd, size=(5, 5), mode="bilinear", align_corners=False)
    small = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(sad_loss([small, odd]), (attention_map(small) - attention_map(resized)).pow(2).mean())


def test_the_term_weights_the_loss_and_refuses_a_model_with_one_stage():
    assert LOSSES.lookup("sad").term is SelfAttentionDistillation
    torch.manual_seed(0)
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    term = SelfAttentionDistillation(SADConfig(weight=7.0))
    out = term(StepOutput(torch.randn(2, 3), feats, torch.tensor([0, 1]), 1))
    assert set(out) == {"sad"}
    torch.testing.assert_close(out["sad"], 7.0 * sad_loss(feats))
    term.check_features([(4, 8, 8), (8, 4, 4)])
    with pytest.raises(ConfigError, match="loss.sad .* has 1 stage feature"):
        term.check_features([(4, 8, 8)])
    with pytest.raises(ValueError, match="at least 2 stage features"):
        sad_loss(feats[:1])
    with pytest.raises(ConfigError, match="weight must be >= 0"):
        SADConfig(weight=-1.0)


def test_sad_configs_hold_self_kd_libs_settings(tmp_path):
    from engine.config import load_config

    config = method_config(tmp_path, "sad")
    assert (config.loss.terms, config.loss.sad.weight, config.loss.ce.weight) == (["ce", "sad"], 1000.0, 1.0)
    assert SADConfig().weight == 1000.0
    selfkd = REPO / "configs/cifar100/selfkd"
    alone, with_tffd = (load_config(selfkd / f"cifar_resnet18_sad{suffix}.yaml") for suffix in ("", "_tffd"))
    assert (alone.model.name, alone.loss.terms, alone.loss.sad.weight) == ("cifar_resnet18", ["ce", "sad"], 1000.0)
    assert (with_tffd.loss.terms, with_tffd.loss.sad.weight) == (["ce", "sad", "tffd"], 1000.0)
