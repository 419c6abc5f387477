"""DKS and the auxiliary branches it shares with MixSKD: the synergy by hand (value, gradient, what is
detached, the authors' smoothing), the branches' shapes on 3- and 4-stage backbones, the term's
losses, its options that do not fit a model, and its config file."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from engine.config import load_config
from losses import StepOutput, TrainingSetup
from losses.branches import BasicBlock, Branch, check_branches, rebuilt_stages
from losses.dks import DeeplySupervisedKnowledgeSynergy, DKSConfig, knowledge_synergy
from losses.kd import kd_loss

from conftest import REPO, method_config

RESNET18 = ((64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4))  # cifar_resnet18 on 32x32 images
RESNET20 = ((16, 32, 32), (32, 16, 16), (64, 8, 8))


# ---------------------------------------------------------------- the synergy
def kl(p, q):
    """KL_bm(p || q) of probability rows."""
    return (p * (p / q).log()).sum(1).mean()


def test_synergy_is_the_off_diagonal_sum_of_the_pairwise_kl_matrix_with_the_teacher_detached():
    torch.manual_seed(0)
    logits = [torch.randn(3, 4, requires_grad=True) for _ in range(3)]
    temperature = 2.0
    value = knowledge_synergy(logits, temperature)
    p = [z.detach().div(temperature).softmax(1) for z in logits]
    matrix = [[kl(p[k], p[j]) for k in range(3)] for j in range(3)]  # row j learns from column k
    expected = temperature**2 * sum(matrix[j][k] for j in range(3) for k in range(3) if j != k)
    torch.testing.assert_close(value, expected)
    value.backward()
    # d/dz_j of T^2 KL(sg p_k || p_j) is T (p_j - p_k) / N: exit j gets gradient only as a student.
    for j in range(3):
        torch.testing.assert_close(logits[j].grad, temperature * sum(p[j] - p[k] for k in range(3) if k != j) / 3)


def test_synergy_at_any_temperature_is_the_sum_of_kd_losses_over_ordered_pairs():
    torch.manual_seed(1)
    logits = [torch.randn(5, 6) for _ in range(3)]
    pairs = sum(kd_loss(logits[j], logits[k], 4.0) for j in range(3) for k in range(3) if j != k)
    torch.testing.assert_close(knowledge_synergy(logits, 4.0), pairs)  # Self-KD-Lib: T = 4, no smoothing


def test_synergy_smooths_the_probabilities_as_the_authors_do():
    student = torch.tensor([[0.0, 30.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[30.0, 0.0, 0.0]], requires_grad=True)
    eps = 1e-2
    value = knowledge_synergy([student, teacher], 1.0, smoothing=eps)

    def smoothed(z):
        return (z.detach().softmax(1) + eps) / (1 + 3 * eps)

    p, q = smoothed(student), smoothed(teacher)
    torch.testing.assert_close(value, kl(q, p) + kl(p, q))
    # Without smoothing the same near one-hot exits give a KL of about 30 each way.
    assert abs(knowledge_synergy([student, teacher], 1.0).item() - 60) < 1e-3
    value.backward()
    assert torch.isfinite(student.grad).all() and torch.isfinite(teacher.grad).all()


# ---------------------------------------------------------------- the branches
@pytest.mark.parametrize(
    "shapes, stage, plan",
    [
        (RESNET18, 1, [(64, 128, 2), (128, 256, 2), (256, 512, 2)]),
        (RESNET18, 3, [(256, 512, 2)]),
        (RESNET20, 1, [(16, 32, 2), (32, 64, 2)]),
        (RESNET20, 2, [(32, 64, 2)]),
    ],
)
def test_a_branch_rebuilds_every_later_stage_and_ends_in_the_deepest_shape(shapes, stage, plan):
    assert rebuilt_stages(shapes, stage) == plan
    branch = Branch(shapes, stage, [2] * len(plan), num_classes=7)
    logits, feature = branch(torch.randn(2, *shapes[stage - 1]))
    assert tuple(logits.shape) == (2, 7) and tuple(feature.shape[1:]) == shapes[-1]
    blocks = [list(stage_blocks) for stage_blocks in branch.stages]
    assert [len(b) for b in blocks] == [2] * len(plan)
    # The first block of each rebuilt stage changes the shape through a 1x1 conv-BN projection.
    assert all(
        not isinstance(b[0].shortcut, torch.nn.Identity) and isinstance(b[1].shortcut, torch.nn.Identity)
        for b in blocks
    )
    assert [b[0].conv1.stride[0] for b in blocks] == [s for _, _, s in plan]


def test_a_branch_takes_block_counts_per_stage_and_a_width_multiplier():
    branch = Branch(RESNET18, 2, [1, 2], num_classes=5, width=2.0)
    assert [len(s) for s in branch.stages] == [1, 2]
    assert rebuilt_stages(RESNET18, 2, 2.0) == [(128, 512, 2), (512, 1024, 2)]
    logits, feature = branch(torch.randn(2, 128, 16, 16))
    assert tuple(feature.shape[1:]) == (1024, 4, 4) and branch.fc.in_features == 1024
    with pytest.raises(ValueError, match="rebuilds 2 stages"):
        Branch(RESNET18, 2, [2], num_classes=5)


def test_the_basic_block_is_conv_bn_relu_conv_bn_plus_the_shortcut_then_relu():
    torch.manual_seed(0)
    block = BasicBlock(3, 3, 1).eval()
    x = torch.randn(2, 3, 5, 5)
    inner = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(block(x), F.relu(inner + x))


@pytest.mark.parametrize(
    "shapes, stages, message",
    [
        (RESNET18, [4], "branches start from stages 1..3"),
        (RESNET18, [0], "branches start from stages 1..3"),
        (RESNET18, [2, 2], "lists a stage twice"),
        (RESNET18, [], "is empty"),
        (((8, 6, 6), (8, 4, 4)), [1], "stage 2's 4x4 feature is not stage 1's 6x6 shrunk by one integer factor"),
        (((8, 8, 8), (8, 4, 2)), [1], "stage 2's 4x2 feature is not stage 1's 8x8"),
    ],
)
def test_stages_no_branch_can_start_from_are_config_errors(shapes, stages, message):
    with pytest.raises(ConfigError, match=message):
        check_branches(shapes, stages, "loss.x")


def test_a_shape_mismatch_below_the_branches_is_no_error():
    check_branches(((8, 6, 6), (8, 4, 4), (8, 2, 2)), [2], "loss.x")  # stage 1 -> 2 is never rebuilt


# ---------------------------------------------------------------- the term
def dks(shapes=RESNET20, classes=5, **options):
    term = DeeplySupervisedKnowledgeSynergy(DKSConfig(**options))
    term.check_features(shapes)
    term.attach(TrainingSetup(num_samples=8, num_classes=classes, epochs=2, feature_shapes=shapes))
    return term


def test_default_branches_sit_on_the_two_stages_below_the_deepest():
    assert dks().stages == [1, 2]
    term = dks(RESNET18)
    assert term.stages == [2, 3]  # Self-KD-Lib's CIFAR_ResNet18_dks: [1 x 256, 2 x 512] and [2 x 512]
    assert [[len(s) for s in branch.stages] for branch in term.branches] == [[1, 2], [2]]


def test_dks_loss_is_every_exits_ce_plus_the_weighted_synergy():
    torch.manual_seed(0)
    term = dks(weight=0.5, temperature=3.0, smoothing=0.0)
    feats = [torch.randn(4, *shape, requires_grad=True) for shape in RESNET20]
    logits = torch.randn(4, 5, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 3])
    losses = term(StepOutput(logits, feats, targets, epoch=1))
    assert set(losses) == {"dks_ce", "dks_kd"}
    exits = [branch(feats[stage - 1])[0] for stage, branch in zip(term.stages, term.branches)] + [logits]
    torch.testing.assert_close(losses["dks_ce"], sum(F.cross_entropy(z, targets) for z in exits))
    torch.testing.assert_close(losses["dks_kd"], 0.5 * knowledge_synergy(exits, 3.0))
    # The backbone's exit learns from the branches, and the branches from it.
    losses["dks_kd"].backward()
    assert logits.grad.abs().sum() > 0 and feats[0].grad.abs().sum() > 0
    assert all(p.grad is not None for p in term.branches[0].fc.parameters())


def test_dks_takes_every_exits_ce_against_mixed_labels():
    torch.manual_seed(0)
    term = dks()
    feats = [torch.randn(2, *shape) for shape in RESNET20]
    logits, targets = torch.randn(2, 5), torch.tensor([0, 1])
    mixed = torch.tensor([[0.3, 0.7, 0, 0, 0], [0, 0, 1.0, 0, 0]])
    losses = term(StepOutput(logits, feats, targets, 1, target_probs=mixed))
    exits = [branch(feats[stage - 1])[0] for stage, branch in zip(term.stages, term.branches)] + [logits]
    torch.testing.assert_close(losses["dks_ce"], sum(F.cross_entropy(z, mixed) for z in exits))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"stages": [3]}, "branches start from stages 1..2"),
        ({"stages": [1]}, "2 lists in loss.dks.blocks"),
        ({"widths": [1.0]}, "1 loss.dks.widths; give one per branch"),
        ({"blocks": [[1], [2]]}, r"gives \[1\] for the branch from stage 1, which rebuilds 2 stages \(2..3\)"),
    ],
)
def test_dks_options_that_do_not_fit_the_model_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        DeeplySupervisedKnowledgeSynergy(DKSConfig(**options)).check_features(RESNET20)


@pytest.mark.parametrize(
    "options",
    [{"temperature": 0.0}, {"smoothing": -1e-8}, {"blocks": [[0, 2], [2]]}, {"widths": [1.0, 0.0]}, {"weight": -1.0}],
)
def test_dks_option_ranges_are_checked(options):
    with pytest.raises(ConfigError):
        DKSConfig(**options)


def test_dks_config_holds_the_original_settings(tmp_path):
    config = method_config(tmp_path, "dks")
    cfg = config.loss.dks
    assert config.loss.terms == ["dks"] and config.batch.transforms == []
    assert (cfg.weight, cfg.temperature, cfg.smoothing) == (1.0, 1.0, 1e-8)  # sundw2014/DKS
    assert (cfg.stages, cfg.blocks, cfg.widths) == (None, [[1, 2], [2]], None)  # Self-KD-Lib's ResNet-18 branches
    shipped = load_config(REPO / "configs/cifar100/selfkd/cifar_resnet18_dks_tffd.yaml")
    assert shipped.loss.terms == ["dks", "tffd"] and shipped.model.name == "cifar_resnet18"
