"""FRSKD: attention transfer and the fusion weights by hand, the BiFPN self-teacher's shapes on real
stage shapes, the whole loss as the weighted sum of its parts with the teacher side detached, the
option and shape errors and the shipped settings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from losses import StepOutput
from losses.frskd import (
    BiFPNSelfTeacher,
    FeatureRefinementSelfKD,
    FRSKDConfig,
    attention,
    attention_loss,
    frskd_losses,
    fuse,
    fusion_weights,
)
from losses.kd import kd_loss

from conftest import REPO, SMOKE, attached, leaf_tensors, method_config

CIFAR_RESNET18 = ((64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4))
RESNET20 = ((16, 32, 32), (32, 16, 16), (64, 8, 8))
SMALL = ((4, 8, 8), (6, 4, 4), (8, 2, 2))


# ---------------------------------------------------------------- attention transfer
def test_attention_is_the_l2_normalised_channel_mean_of_squares():
    f = torch.tensor([[[[1.0, 2.0]], [[1.0, 0.0]]]])  # N=1, C=2, 1x2: mean_c f^2 = [1, 2]
    torch.testing.assert_close(attention(f), torch.tensor([[1.0, 2.0]]) / math.sqrt(5))
    g = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]])  # one sample per row: [9, 0, 0, 16] / 18.36
    torch.testing.assert_close(
        attention(torch.cat([g, 2 * g])), torch.tensor([[9.0, 0, 0, 16]]).repeat(2, 1) / 337**0.5
    )


def test_attention_loss_value_and_gradient_by_hand_with_the_teacher_detached():
    s = torch.tensor([[[[1.0, 2.0]], [[1.0, 0.0]]]], requires_grad=True)  # a(s) = [1, 2] / sqrt(5)
    t = torch.tensor([[[[0.0, 3.0]]]], requires_grad=True)  # one channel: a(t) = [0, 9] / 9 = [0, 1]
    value = attention_loss([s], [t])
    a, b = torch.tensor([1.0, 2.0]) / math.sqrt(5), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(value, ((a - b) ** 2).mean())
    value.backward()
    assert t.grad is None
    # chain rule: dL/da = 2 (a - b) / P; da/dm = (I - a a^T) / |m| with m = [1, 2]; dm_j/ds_cj = 2 s_cj / C
    dl_da = 2 * (a - b) / 2
    dl_dm = (torch.eye(2) - torch.outer(a, a)) @ dl_da / math.sqrt(5)
    expected = dl_dm * 2 * s.detach()[0, :, 0, :] / 2
    torch.testing.assert_close(s.grad[0, :, 0, :], expected)


def test_attention_loss_sums_the_stages_and_ignores_the_channel_counts():
    torch.manual_seed(0)
    student = [torch.randn(3, 4, 8, 8), torch.randn(3, 6, 4, 4)]
    teacher = [torch.randn(3, 8, 8, 8), torch.randn(3, 12, 4, 4)]  # the self-teacher's maps are wider
    parts = [((attention(s) - attention(t)) ** 2).mean() for s, t in zip(student, teacher)]
    torch.testing.assert_close(attention_loss(student, teacher), parts[0] + parts[1])
    with pytest.raises(ValueError, match="2 student maps but 1 teacher"):
        attention_loss(student, teacher[:1])


# ---------------------------------------------------------------- fast normalised fusion
def test_fusion_weights_are_relud_and_normalised():
    w = fusion_weights(torch.tensor([-1.0, 1.0, 3.0]))
    torch.testing.assert_close(w, torch.tensor([0.0, 1.0, 3.0]) / (4 + 1e-6))
    assert (fusion_weights(torch.tensor([-2.0, -1.0])) == 0).all()  # all negative: no NaN, nothing passes
    x, y = torch.full((2, 2), 2.0), torch.full((2, 2), 10.0)
    torch.testing.assert_close(fuse(torch.tensor([1.0, 3.0]), [x, y]), (0.25 * x + 0.75 * y) * 4 / (4 + 1e-6))


def test_the_self_teacher_fuses_with_non_negative_normalised_weights():
    torch.manual_seed(0)
    teacher = BiFPNSelfTeacher([c for c, _, _ in SMALL], 5).eval()
    feats = [torch.randn(2, *shape) for shape in SMALL]
    assert [list(w.shape) for w in teacher.top_down_weights] == [[2], [2]]
    assert [list(w.shape) for w in teacher.bottom_up_weights] == [[3], [2]]  # the deepest node has no across input
    assert all((w == 1).all() for w in [*teacher.top_down_weights, *teacher.bottom_up_weights])

    def output(raw_top, raw_bottom):
        with torch.no_grad():
            teacher.top_down_weights[0].copy_(torch.tensor(raw_top))
            teacher.bottom_up_weights[0].copy_(torch.tensor(raw_bottom))
            refined, logits = teacher(feats)
        return torch.cat([r.flatten(1) for r in refined] + [logits], 1)

    reference = output([0.5, 2.0], [0.0, 1.0, 3.0])
    torch.testing.assert_close(output([1.0, 4.0], [-5.0, 2.0, 6.0]), reference)  # scale-free; negatives count as 0
    assert not torch.allclose(output([2.0, 0.5], [0.0, 1.0, 3.0]), reference)


# ---------------------------------------------------------------- the self-teacher's shapes
@pytest.mark.parametrize(
    "shapes, params", [(CIFAR_RESNET18, 6_375_794), (RESNET20, 113_325)], ids=["cifar_resnet18", "resnet20"]
)
def test_the_self_teacher_refines_every_stage_at_its_resolution_with_twice_the_channels(shapes, params):
    teacher = BiFPNSelfTeacher([c for c, _, _ in shapes], 100)
    refined, logits = teacher([torch.randn(2, *shape) for shape in shapes])
    assert [tuple(r.shape) for r in refined] == [(2, 2 * c, h, w) for c, h, w in shapes]
    assert tuple(logits.shape) == (2, 100) and teacher.fc.in_features == 2 * shapes[-1][0]
    assert all((r >= 0).all() for r in refined)  # post-ReLU, as the authors' ``att`` mode
    # BiFPNc at width 2, depth 2 (checked against a replica of MingiJi/FRSKD models/bifpnc.py)
    assert sum(p.numel() for p in teacher.parameters()) == params
    depthwise = [m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 2 * 2 * (len(shapes) - 1) and all(m.groups == m.in_channels for m in depthwise)


def test_width_and_depth_size_the_self_teacher():
    teacher = BiFPNSelfTeacher([4, 6], 3, width=1, depth=3)
    refined, _ = teacher([torch.randn(2, 4, 2, 2), torch.randn(2, 6, 1, 1)])  # two stages: the smallest BiFPN
    assert [r.shape[1] for r in refined] == [4, 6]
    assert sum(m.groups > 1 for m in teacher.modules() if isinstance(m, torch.nn.Conv2d)) == 2 * 3


# ---------------------------------------------------------------- the term
def frskd(shapes=SMALL, classes=5, **options):
    return attached(FeatureRefinementSelfKD(FRSKDConfig(**options)), shapes, classes)


def test_the_loss_is_the_weighted_sum_of_its_parts_with_the_self_teacher_detached():
    torch.manual_seed(0)
    term = frskd(alpha=0.7, beta=3.0, temperature=2.0)
    feats, logits, targets = leaf_tensors(SMALL)
    losses = term(StepOutput(logits, feats, targets, epoch=1))
    assert set(losses) == {"frskd_ce", "frskd_ce_bifpn", "frskd_kd", "frskd_att"}
    refined, teacher_logits = term.teacher(feats)  # train-mode BatchNorm: the same batch, the same output
    torch.testing.assert_close(losses["frskd_ce"], F.cross_entropy(logits, targets))
    torch.testing.assert_close(losses["frskd_ce_bifpn"], F.cross_entropy(teacher_logits, targets))
    torch.testing.assert_close(losses["frskd_kd"], 0.7 * kd_loss(logits, teacher_logits, 2.0))
    torch.testing.assert_close(losses["frskd_att"], 3.0 * attention_loss(feats, refined))
    torch.testing.assert_close(frskd_losses(logits, feats, teacher_logits, refined, targets, 0.7, 3.0, 2.0), losses)

    # KD and attention transfer teach the backbone only: nothing reaches the self-teacher through them.
    (losses["frskd_kd"] + losses["frskd_att"]).backward(retain_graph=True)
    assert all(p.grad is None for p in term.parameters())
    assert logits.grad.abs().sum() > 0 and all(f.grad.abs().sum() > 0 for f in feats)
    # The self-teacher learns from its CE, which also reaches the backbone's features (not detached).
    for f in feats:
        f.grad = None
    losses["frskd_ce_bifpn"].backward()
    assert all(p.grad is not None for p in term.teacher.parameters())
    assert all(f.grad.abs().sum() > 0 for f in feats)


def test_both_cross_entropies_take_the_mixed_labels():
    torch.manual_seed(0)
    term = frskd()
    feats = [torch.randn(4, *shape) for shape in SMALL]
    logits, targets = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    mixed = 0.3 * F.one_hot(targets, 5).float() + 0.7 * F.one_hot(targets.flip(0), 5).float()
    losses = term(StepOutput(logits, feats, targets, epoch=1, target_probs=mixed))
    _, teacher_logits = term.teacher(feats)
    for name, z in (("frskd_ce", logits), ("frskd_ce_bifpn", teacher_logits)):
        torch.testing.assert_close(
            losses[name], 0.3 * F.cross_entropy(z, targets) + 0.7 * F.cross_entropy(z, targets.flip(0))
        )


def test_the_self_teacher_is_the_terms_state():
    term = frskd(CIFAR_RESNET18, 100)
    assert sum(p.numel() for p in term.parameters()) == 6_375_794
    assert all(key.startswith("teacher.") for key in term.state_dict())
    with pytest.raises(RuntimeError, match="not attached"):
        FeatureRefinementSelfKD(FRSKDConfig())(StepOutput(torch.zeros(1, 5), [], torch.zeros(1).long(), epoch=1))


# ---------------------------------------------------------------- options, shapes, settings
@pytest.mark.parametrize(
    "options, message",
    [
        ({"alpha": -1.0}, "alpha must be >= 0"),
        ({"beta": -0.1}, "beta must be >= 0"),
        ({"temperature": 0.0}, "temperature must be >= 0.01"),
        ({"width": 0}, "width must be >= 1"),
        ({"depth": 0}, "depth must be >= 1"),
    ],
)
def test_options_out_of_range_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        FRSKDConfig(**options)


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((8, 4, 4),), "at least 2 stage features to fuse; this one has 1"),
        (((8, 8, 8), (16, 8, 8)), "stage 2's 8x8 feature is not half of stage 1's 8x8"),
        (((8, 7, 7), (16, 4, 4)), "stage 2's 4x4 feature is not half of stage 1's 7x7"),
        (((8, 8, 8), (16, 4, 4), (32, 4, 2)), "stage 3's 4x2 feature is not half of stage 2's 4x4"),
    ],
)
def test_stages_that_do_not_halve_are_config_errors(shapes, message):
    with pytest.raises(ConfigError, match=message):
        FeatureRefinementSelfKD(FRSKDConfig()).check_features(shapes)


def test_every_cifar_and_imagenet_backbone_shape_fits():
    term = FeatureRefinementSelfKD(FRSKDConfig())
    for shapes in (
        CIFAR_RESNET18,
        RESNET20,
        ((256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)),
        ((12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)),
        ((256, 4, 4), (512, 2, 2), (1024, 1, 1)),
    ):
        term.check_features(shapes)


def test_method_configs_hold_the_original_settings(tmp_path):
    from engine.config import load_config

    config = method_config(tmp_path, "frskd")
    assert config.loss.terms == ["frskd"]  # the whole loss: both CEs are in it
    cfg = config.loss.frskd
    assert (cfg.alpha, cfg.beta, cfg.temperature, cfg.width, cfg.depth) == (2.0, 100.0, 4.0, 2, 2)
    selfkd = REPO / "configs/cifar100/selfkd"
    alone, plus = (
        load_config(selfkd / "cifar_resnet18_frskd.yaml"),
        load_config(selfkd / "cifar_resnet18_frskd_tffd.yaml"),
    )
    assert (alone.loss.terms, plus.loss.terms, alone.model.name) == (["frskd"], ["frskd", "tffd"], "cifar_resnet18")


def test_the_self_teacher_is_trained_by_the_optimizer_but_is_not_the_model():
    from engine.builder import build_experiment
    from engine.config import load_config
    from engine.distributed import DistContext

    cpu = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    config = load_config(REPO / "configs/quickstart.yaml", [*SMOKE, "train.device=cpu", "loss.terms=[frskd,tffd]"])
    exp = build_experiment(config, cpu)
    teacher = {id(p) for p in exp.terms[0].parameters()}
    trained = {id(p) for group in exp.optimizer.param_groups for p in group["params"]}
    assert teacher and teacher <= trained and teacher.isdisjoint(id(p) for p in exp.model.parameters())
