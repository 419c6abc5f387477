"""DDGSD: the two-way distillation between the two views and the embedding-mean gap, by hand (value,
gradient, what is detached), the step's batch of both views, and the shipped settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from data.plans.two_views import TwoViewsPlan
from engine.builder import build_experiment
from engine.config import load_config
from engine.distributed import DistContext
from engine.step import compute_losses
from losses import StepOutput
from losses.ddgsd import DataDistortionSelfDistillation, DDGSDConfig, ddgsd_loss

from conftest import REPO, SMOKE, method_config

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def kl_by_hand(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean_n sum_c p_t (log p_t - log p_s), at temperature T, the teacher a constant."""
    p_t = torch.softmax(teacher.detach() / temperature, dim=1)
    return temperature**2 * (p_t * (p_t.log() - torch.log_softmax(student / temperature, dim=1))).sum(1).mean()


LOGITS = torch.tensor(
    [
        [1.0, 0.0, -1.0],
        [0.5, 2.0, 0.0],  # view 1 of samples a, b
        [0.0, 1.0, 0.0],
        [-1.0, 0.0, 3.0],
    ]
)  # view 2 of samples a, b
EMBEDDING = torch.tensor(
    [
        [1.0, 2.0],
        [3.0, 4.0],  # view 1: mean 2.5
        [0.0, 0.0],
        [1.0, 1.0],
    ]
)  # view 2: mean 0.5


def test_mutual_distillation_by_hand_with_each_teacher_view_detached():
    logits = LOGITS.clone().requires_grad_()
    mutual, _ = ddgsd_loss(logits, EMBEDDING, temperature=2.0)
    expected = kl_by_hand(LOGITS[2:], LOGITS[:2], 2.0) + kl_by_hand(LOGITS[:2], LOGITS[2:], 2.0)
    torch.testing.assert_close(mutual, expected)
    mutual.backward()
    # With the teacher side a constant, d/dz_s T^2 KL(p_t || p_s) / B = T (p_s - p_t) / B for each view:
    # a teacher that let its gradient through would add a second term.
    p = torch.softmax(LOGITS / 2.0, dim=1)
    torch.testing.assert_close(logits.grad[:2], 2.0 * (p[:2] - p[2:]) / 2)
    torch.testing.assert_close(logits.grad[2:], 2.0 * (p[2:] - p[:2]) / 2)


def test_embedding_mean_gap_is_the_squared_difference_of_two_scalar_means():
    embedding = EMBEDDING.clone().requires_grad_()
    _, gap = ddgsd_loss(LOGITS, embedding, temperature=4.0)
    torch.testing.assert_close(gap, torch.tensor(4.0))  # (2.5 - 0.5)^2: one mean over all B x D entries each
    gap.backward()
    # d gap / d e_1 = 2 (m_1 - m_2) / (B D) = 1 on every entry of view 1; the negative on view 2 (not detached)
    torch.testing.assert_close(embedding.grad, torch.tensor([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]]))
    # a per-dimension gap would differ: view 1 means [2, 3], view 2 [0.5, 0.5]
    assert not torch.isclose(gap, ((EMBEDDING[:2].mean(0) - EMBEDDING[2:].mean(0)) ** 2).sum())


def test_the_term_weights_its_parts_and_reads_the_pooled_head_map():
    term = DataDistortionSelfDistillation(DDGSDConfig(weight=2.0, temperature=4.0, mean_weight=0.5))
    assert term.batch_plan == "two_views"
    head_map = EMBEDDING[:, :, None, None].expand(4, 2, 3, 3)  # pooled: EMBEDDING
    out = term(StepOutput(LOGITS, [], torch.tensor([0, 1, 0, 1]), 1, head_map=head_map))
    mutual, gap = ddgsd_loss(LOGITS, EMBEDDING, 4.0)
    assert set(out) == {"ddgsd_kd", "ddgsd_mean"}
    torch.testing.assert_close(out["ddgsd_kd"], 2.0 * mutual)
    torch.testing.assert_close(out["ddgsd_mean"], 0.5 * gap)
    images, targets, indices = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 0, 1]), torch.arange(4)
    parts, kept_targets, kept_indices, _ = TwoViewsPlan().compose(images, targets, indices)  # both views train
    assert parts == (images,) and kept_targets is targets and kept_indices is indices


def test_the_step_trains_on_both_views_of_each_sample():
    config = load_config(
        REPO / "configs/quickstart.yaml",
        [*SMOKE, "train.device=cpu", "loss.terms=[ce,ddgsd]", "train.batch_size=16", "data.num_train=48"],
    )
    exp = build_experiment(config, CPU)
    exp.loaders.train.set_epoch(1)
    images, targets, indices = next(iter(exp.loaders.train))
    assert images.shape[0] == 32 and torch.equal(targets[:16], targets[16:]) and torch.equal(indices[:16], indices[16:])
    assert not torch.equal(images[:16], images[16:])  # two independent augmentations
    losses = compute_losses(exp, images, targets, 1, indices)
    assert losses.logits.shape[0] == 32 and torch.equal(losses.targets, targets)
    assert {"ce", "ddgsd_kd", "ddgsd_mean"} == set(losses.terms)


def test_the_method_config_holds_self_kd_libs_settings(tmp_path):
    config = method_config(tmp_path, "ddgsd")
    assert config.loss.terms == ["ce", "ddgsd"]
    assert (config.loss.ddgsd.weight, config.loss.ddgsd.temperature, config.loss.ddgsd.mean_weight) == (1.0, 4.0, 5e-4)
    # their CE: cross_entropy over the 2B images / 2, which the ce term at weight 0.5 gives
    assert config.loss.ce.weight == 0.5 and config.loss.ce.label_smoothing == 0
    logits, targets = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(
        0.5 * F.cross_entropy(logits, targets),
        (F.cross_entropy(logits[:3], targets[:3]) + F.cross_entropy(logits[3:], targets[3:])) / 4,
    )
    selfkd = REPO / "configs/cifar100/selfkd"
    alone, plus = (load_config(selfkd / f"cifar_resnet18_{name}.yaml") for name in ("ddgsd", "ddgsd_tffd"))
    assert alone.loss.terms == ["ce", "ddgsd"] and plus.loss.terms == ["ce", "ddgsd", "tffd"]
    assert alone.loss.ce.weight == plus.loss.ce.weight == 0.5 and alone.train.batch_size == 128


@pytest.mark.parametrize("options", [{"weight": -1.0}, {"temperature": 0.0}, {"mean_weight": -1e-4}])
def test_out_of_range_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        DDGSDConfig(**options)
