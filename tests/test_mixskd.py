"""MixSKD: the mix_pairs plan's composed batch, the pure functions by hand (the KD directions detached exactly as the
authors' script, the feature MSE with neither side detached, the discriminators' BCE and its labels),
the term on 3- and 4-stage shapes, its options, where its parameters go, and its config file."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import ConfigError
from data.batch_transforms import beta_sample
from data.plans.mix_pairs import MixPairsOptions, MixPairsPlan, interpolate
from engine.config import load_config
from losses import StepOutput, TrainingSetup
from losses.kd import kd_loss
from losses.mixskd import (
    MixSKDConfig,
    MixupSelfKD,
    discriminator_bce,
    feature_mse,
    mixup_distillation,
)

from conftest import REPO, SMOKE, method_config

RESNET18 = ((64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4))  # cifar_resnet18 on 32x32 images
RESNET20 = ((16, 16, 16), (32, 8, 8), (64, 4, 4))  # resnet20 on 16x16 images


def probs(z, temperature):
    return z.detach().div(temperature).softmax(1)


# ---------------------------------------------------------------- the batch
def test_interpolate_by_hand():
    x = torch.tensor([[1.0], [2.0], [4.0]])
    torch.testing.assert_close(interpolate(x, 0.25, torch.tensor([2, 0, 1])), torch.tensor([[3.25], [1.25], [2.5]]))


def test_the_batch_is_the_clean_images_then_their_mixup_with_lam_from_the_global_cpu_generator():
    plan = MixPairsPlan(MixPairsOptions(alpha=0.4))
    assert MixupSelfKD.batch_plan == "mix_pairs" and set(plan.refuses_batch_transforms) == {"mixup", "cutmix"}
    images, targets, indices = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3]), torch.tensor([7, 5, 3, 1])
    torch.manual_seed(3)
    (batch,), labels, batch_indices, pairs = plan.compose(images, targets, indices)
    torch.manual_seed(3)
    lam, permutation = beta_sample(0.4), torch.randperm(4)
    assert pairs.lam.item() == pytest.approx(lam) and pairs.lam.dim() == 0
    assert torch.equal(pairs.permutation, permutation)
    torch.testing.assert_close(batch, torch.cat([images, lam * images + (1 - lam) * images[permutation]]))
    assert labels.tolist() == [0, 1, 2, 3] * 2 and batch_indices.tolist() == [7, 5, 3, 1] * 2
    assert plan.compose(images, targets, None).indices is None


# ---------------------------------------------------------------- the pure functions
def test_distillation_both_ways_between_each_auxiliary_exits_two_sides_and_from_the_self_teacher():
    torch.manual_seed(0)
    temperature, n = 3.0, 4
    interpolated = [torch.randn(n, 5, requires_grad=True) for _ in range(2)]  # one auxiliary exit, then the final
    mixed = [torch.randn(n, 5, requires_grad=True) for _ in range(2)]
    teacher_of_interpolated, teacher_of_mixed = (torch.randn(n, 5, requires_grad=True) for _ in range(2))
    value = mixup_distillation(interpolated, mixed, teacher_of_interpolated, teacher_of_mixed, temperature)
    expected = (
        kd_loss(interpolated[0], mixed[0], 3.0)
        + kd_loss(mixed[0], interpolated[0], 3.0)
        + kd_loss(interpolated[1], teacher_of_mixed, 3.0)
        + kd_loss(mixed[1], teacher_of_interpolated, 3.0)
    )
    torch.testing.assert_close(value, expected)
    value.backward()
    # d/dz_s of T^2 KL(sg p_t || p_s) = T (p_s - p_t) / N: each side only ever learns as the student.
    a, b = probs(interpolated[0], temperature), probs(mixed[0], temperature)
    torch.testing.assert_close(interpolated[0].grad, temperature * (a - b) / n)
    torch.testing.assert_close(mixed[0].grad, temperature * (b - a) / n)
    torch.testing.assert_close(
        interpolated[1].grad, temperature * (probs(interpolated[1], 3.0) - probs(teacher_of_mixed, 3.0)) / n
    )
    torch.testing.assert_close(
        mixed[1].grad, temperature * (probs(mixed[1], 3.0) - probs(teacher_of_interpolated, 3.0)) / n
    )
    assert teacher_of_interpolated.grad is None and teacher_of_mixed.grad is None  # the self-teacher only teaches


def test_feature_mse_is_an_element_mean_with_neither_side_detached():
    interpolated = [torch.tensor([[[[1.0, 2.0]]]], requires_grad=True)]
    mixed = [torch.tensor([[[[0.0, 4.0]]]], requires_grad=True)]
    value = feature_mse(interpolated, mixed)
    assert value.item() == (1 + 4) / 2
    value.backward()
    assert interpolated[0].grad.flatten().tolist() == [1.0, -2.0] and mixed[0].grad.flatten().tolist() == [-1.0, 2.0]


def test_discriminator_bce_labels_the_interpolated_maps_first_and_pools_them():
    discriminator = nn.Linear(2, 2)
    with torch.no_grad():
        discriminator.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        discriminator.bias.zero_()
    interpolated = torch.tensor([[[[1.0, 3.0]], [[0.0, 2.0]]]], requires_grad=True)  # 1 x 2 x 1 x 2: pooled [2, 1]
    mixed = torch.tensor([[[[-1.0, -1.0]], [[5.0, 3.0]]]], requires_grad=True)  # pooled [-1, 4]
    value = discriminator_bce([discriminator], [interpolated], [mixed])
    outputs = torch.tensor([[2.0, -1.0], [-1.0, -4.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bce = -(labels * F.logsigmoid(outputs) + (1 - labels) * F.logsigmoid(-outputs)).mean()
    torch.testing.assert_close(value, bce)
    value.backward()
    assert interpolated.grad.abs().sum() > 0 and mixed.grad.abs().sum() > 0


# ---------------------------------------------------------------- the term
def mixskd(shapes=RESNET20, classes=5, **options):
    term = MixupSelfKD(MixSKDConfig(**options))
    term.check_features(shapes)
    term.attach(TrainingSetup(num_samples=8, num_classes=classes, epochs=2, feature_shapes=shapes))
    return term


@pytest.mark.parametrize("shapes, stages, rebuilt", [(RESNET18, [1, 2, 3], [3, 2, 1]), (RESNET20, [1, 2], [2, 1])])
def test_branches_on_every_shallow_stage_and_a_self_teacher_over_every_exits_map(shapes, stages, rebuilt):
    term = mixskd(shapes)
    assert term.stages == stages and [len(branch.stages) for branch in term.branches] == rebuilt
    assert all(len(blocks) == 2 for branch in term.branches for blocks in branch.stages)
    for stage, branch in zip(stages, term.branches):
        logits, feature = branch(torch.randn(2, *shapes[stage - 1]))
        assert tuple(logits.shape) == (2, 5) and tuple(feature.shape[1:]) == shapes[-1]
    conv = term.self_teacher[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (
        (len(stages) + 1) * shapes[-1][0],
        shapes[-1][0],
        (1, 1),
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in term.self_teacher)  # none in the original
    assert [d[0].in_features for d in term.discriminators] == [shapes[-1][0]] * (len(stages) + 1)


def step_of(term, n=3, classes=5, target_probs=None):
    torch.manual_seed(0)
    images, targets = torch.zeros(n, 1), torch.arange(n) % classes
    _, targets, _, pairs = MixPairsPlan(MixPairsOptions()).compose(images, targets, None)
    feats = [torch.randn(2 * n, *shape, requires_grad=True) for shape in RESNET20]
    logits = torch.randn(2 * n, classes, requires_grad=True)
    return StepOutput(logits, feats, targets, 1, target_probs=target_probs, batch=pairs)


def test_mixskd_loss_is_the_sum_of_its_parts_on_the_two_halves_of_the_batch():
    term = mixskd(kd_weight=0.5, feature_weight=2.0, adversarial_weight=0.25, temperature=2.0)
    step = step_of(term)
    losses = term(step)
    lam, permutation, n = step.batch.lam, step.batch.permutation, 3
    exits = [branch(step.feats[stage - 1]) for stage, branch in zip(term.stages, term.branches)]
    logits = [z for z, _ in exits] + [step.logits]
    maps = [f for _, f in exits] + [step.feats[-1]]
    y = step.targets[:n]
    interpolated_maps = [lam * f[:n] + (1 - lam) * f[:n][permutation] for f in maps]
    teacher_int = term.self_teacher(torch.cat(interpolated_maps, 1))
    teacher_mix = term.self_teacher(torch.cat([f[n:] for f in maps], 1))

    def mix_ce(z):
        return lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y[permutation])

    torch.testing.assert_close(losses["mixskd_ce"], sum(F.cross_entropy(z[:n], y) for z in logits))
    torch.testing.assert_close(
        losses["mixskd_mix_ce"], sum(mix_ce(z) for z in [*(z[n:] for z in logits), teacher_int, teacher_mix])
    )
    interpolated = [lam * z[:n] + (1 - lam) * z[:n][permutation] for z in logits]
    torch.testing.assert_close(
        losses["mixskd_kd"],
        0.5 * mixup_distillation(interpolated, [z[n:] for z in logits], teacher_int, teacher_mix, 2.0),
    )
    torch.testing.assert_close(losses["mixskd_feature"], 2.0 * feature_mse(interpolated_maps, [f[n:] for f in maps]))
    torch.testing.assert_close(
        losses["mixskd_adversarial"],
        0.25 * discriminator_bce(term.discriminators, interpolated_maps, [f[n:] for f in maps]),
    )
    # Only the mixup CE trains the self-teacher; the frozen discriminators train nothing of their own,
    # but pass the BCE's gradient on to the maps.
    losses["mixskd_adversarial"].backward(retain_graph=True)
    assert all(p.grad is None for p in term.discriminators.parameters()) and step.feats[-1].grad.abs().sum() > 0
    losses["mixskd_kd"].backward(retain_graph=True)
    assert all(p.grad is None for p in term.self_teacher.parameters())
    losses["mixskd_mix_ce"].backward()
    assert all(p.grad is not None for p in term.self_teacher.parameters())


def test_the_cifar_scripts_choices_freeze_the_self_teacher_and_train_the_discriminators_on_request():
    term = mixskd(mixup_ce=False, discriminator="trained")
    assert not any(p.requires_grad for p in term.self_teacher.parameters())
    assert all(p.requires_grad for p in term.discriminators.parameters())
    losses = term(step_of(term))
    assert set(losses) == {"mixskd_ce", "mixskd_kd", "mixskd_feature", "mixskd_adversarial"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in term.discriminators.parameters())


def test_mixskd_takes_its_ce_against_the_clean_halfs_mixed_labels_and_interpolates_them():
    term, n = mixskd(), 3
    target_probs = torch.softmax(torch.randn(2 * n, 5), 1)
    step = step_of(term, target_probs=target_probs)
    losses = term(step)
    lam, permutation = step.batch.lam, step.batch.permutation
    exits = [branch(step.feats[stage - 1]) for stage, branch in zip(term.stages, term.branches)]
    logits, maps = [z for z, _ in exits] + [step.logits], [f for _, f in exits] + [step.feats[-1]]
    clean = target_probs[:n]
    torch.testing.assert_close(losses["mixskd_ce"], sum(F.cross_entropy(z[:n], clean) for z in logits))
    mixed_labels = lam * clean + (1 - lam) * clean[permutation]
    teachers = [
        term.self_teacher(torch.cat([lam * f[:n] + (1 - lam) * f[:n][permutation] for f in maps], 1)),
        term.self_teacher(torch.cat([f[n:] for f in maps], 1)),
    ]
    torch.testing.assert_close(
        losses["mixskd_mix_ce"], sum(F.cross_entropy(z, mixed_labels) for z in [*(z[n:] for z in logits), *teachers])
    )


@pytest.mark.parametrize(
    "options, shapes, message",
    [
        ({"stages": [3]}, RESNET20, "branches start from stages 1..2"),
        ({"stages": []}, RESNET20, "is empty"),
        ({}, ((8, 6, 6), (8, 4, 4)), "loss.mixskd: stage 2's 4x4 feature is not stage 1's 6x6"),
    ],
)
def test_mixskd_options_that_do_not_fit_the_model_are_config_errors(options, shapes, message):
    with pytest.raises(ConfigError, match=message):
        MixupSelfKD(MixSKDConfig(**options)).check_features(shapes)
    with pytest.raises(ConfigError, match="must be one of frozen, trained"):
        MixSKDConfig(discriminator="adversarial")


def test_one_step_forwards_twice_the_batch_and_trains_the_branches_and_self_teacher_but_not_the_discriminators():
    from engine.builder import build_experiment
    from engine.config import load_config
    from engine.distributed import DistContext
    from engine.step import apply_gradients, compute_losses

    cpu = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    overrides = [*SMOKE, "train.device=cpu", "train.batch_size=8", "loss.terms=[mixskd,tffd]"]
    exp = build_experiment(load_config(REPO / "configs/quickstart.yaml", overrides), cpu)
    term = exp.terms[0]
    trained = {id(p) for group in exp.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in term.parameters()} <= trained
    before = {name: value.clone() for name, value in term.state_dict().items()}
    images, targets, indices = next(iter(exp.loaders.train))
    result = compute_losses(exp, images, targets, 1, indices)
    assert result.logits.shape[0] == 2 * images.shape[0] and torch.equal(result.targets, torch.cat([targets, targets]))
    assert {"mixskd_ce", "mixskd_mix_ce", "mixskd_kd", "mixskd_feature", "mixskd_adversarial", "tffd_intra"} <= set(
        result.terms
    )
    apply_gradients(exp, result.total)
    after = term.state_dict()
    assert not torch.equal(after["self_teacher.0.weight"], before["self_teacher.0.weight"])
    assert not torch.equal(after["branches.0.fc.weight"], before["branches.0.fc.weight"])
    assert all(torch.equal(after[key], before[key]) for key in before if key.startswith("discriminators."))


def test_mixskd_config_holds_the_original_settings(tmp_path):
    config = method_config(tmp_path, "mixskd")
    cfg = config.loss.mixskd
    assert config.loss.terms == ["mixskd"] and config.batch.transforms == []
    assert (config.batch.mix_pairs.alpha, cfg.temperature) == (0.4, 3.0)
    assert (cfg.kd_weight, cfg.feature_weight, cfg.adversarial_weight) == (1.0, 1.0, 1.0)
    assert (cfg.mixup_ce, cfg.discriminator, cfg.discriminator_width, cfg.stages, cfg.blocks) == (
        True,
        "frozen",
        128,
        None,
        2,
    )
    shipped = load_config(REPO / "configs/cifar100/selfkd/cifar_resnet18_mixskd_tffd.yaml")
    assert shipped.loss.terms == ["mixskd", "tffd"] and shipped.model.name == "cifar_resnet18"
