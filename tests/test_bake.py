"""BAKE: the batch knowledge ensemble and the loss by hand (value, gradient, nothing through the
targets), the same_class batch plan's partners (same class, the anchor left out, reproducible, sharded like
the anchors), the step's batch of anchors and partners, and the shipped settings."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import ConfigError
from data.plans.same_class import MAX_PARTNERS, SameClassOptions, SameClassPlan, other_same_class
from data.sharding import epoch_indices
from engine.builder import build_experiment
from engine.config import load_config
from engine.distributed import DistContext
from engine.step import compute_losses
from losses import StepOutput
from losses.bake import BAKEConfig, BatchKnowledgeEnsembling, bake_loss, knowledge_ensemble

from conftest import REPO, SMOKE, method_config

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])


# ---------------------------------------------------------------- the ensemble
def test_two_images_ensemble_each_others_predictions():
    # N = 2: A = [[0, 1], [1, 0]], (I - wA)^-1 = [[1, w], [w, 1]] / (1 - w^2): q_1 = (p_1 + w p_2) / (1 + w)
    q = knowledge_ensemble(torch.randn(2, 5), PROBS[:2], omega=0.5)
    torch.testing.assert_close(q[0], (PROBS[0] + 0.5 * PROBS[1]) / 1.5)
    torch.testing.assert_close(q[1], (PROBS[1] + 0.5 * PROBS[0]) / 1.5)


def test_equally_alike_images_mix_two_fifths_of_their_own_with_a_fifth_of_everyones():
    # orthogonal embeddings: A = (J - I) / 2; at w = 0.5, (1 - w)(I - wA)^-1 = (2/5) I + (1/5) J
    q = knowledge_ensemble(torch.eye(3) * torch.tensor([[1.0], [3.0], [0.5]]), PROBS, omega=0.5)
    torch.testing.assert_close(q, 0.4 * PROBS + 0.2 * PROBS.sum(0))


def test_a_three_by_three_affinity_by_hand():
    embedding = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # normalised: cosines 0, 1/sqrt2, 1/sqrt2
    c = math.exp(1 / math.sqrt(2))
    affinity = torch.tensor(
        [[0.0, 1 / (1 + c), c / (1 + c)], [1 / (1 + c), 0.0, c / (1 + c)], [0.5, 0.5, 0.0]]
    )  # the diagonal is left out before the row softmax
    omega = 0.3
    q = knowledge_ensemble(embedding, PROBS, omega)
    torch.testing.assert_close(q, (1 - omega) * torch.linalg.inv(torch.eye(3) - omega * affinity) @ PROBS)
    torch.testing.assert_close(q, omega * affinity @ q + (1 - omega) * PROBS)  # the propagation's fixed point
    torch.testing.assert_close(q.sum(1), torch.ones(3))
    torch.testing.assert_close(knowledge_ensemble(embedding, PROBS, 0.0), PROBS)  # omega 0: no ensembling


def test_the_ensemble_has_no_gradient_and_is_float32_under_low_precision_inputs():
    embedding, probs = torch.randn(4, 6, requires_grad=True), torch.softmax(torch.randn(4, 3), 1).requires_grad_()
    q = knowledge_ensemble(embedding, probs, 0.5)
    assert not q.requires_grad
    low = knowledge_ensemble(embedding.detach().bfloat16(), probs.detach().bfloat16(), 0.5)
    assert low.dtype == torch.float32 and torch.allclose(low, q, atol=2e-2)


# ---------------------------------------------------------------- the loss
def test_bake_loss_by_hand_with_nothing_through_the_targets():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, requires_grad=True)
    embedding = torch.randn(5, 8, requires_grad=True)
    loss = bake_loss(logits, embedding, temperature=2.0, omega=0.5)
    q = knowledge_ensemble(embedding, torch.softmax(logits.detach() / 2.0, 1), 0.5)
    p = torch.softmax(logits.detach() / 2.0, 1)
    torch.testing.assert_close(loss, 4.0 * (q * (q.log() - p.log())).sum(1).mean())
    grad_logits, grad_embedding = torch.autograd.grad(loss, [logits, embedding], allow_unused=True)
    assert grad_embedding is None  # no gradient through the affinity
    torch.testing.assert_close(grad_logits, 2.0 * (p - q) / 5)  # T (p - q) / N: q a constant


def test_the_term_reads_the_pooled_head_map_and_needs_the_same_class_plan():
    term = BatchKnowledgeEnsembling(BAKEConfig(weight=0.5, temperature=3.0, omega=0.2))
    assert term.batch_plan == "same_class"
    head_map = torch.randn(6, 4, 2, 2)
    logits = torch.randn(6, 3)
    out = term(StepOutput(logits, [], torch.zeros(6, dtype=torch.long), 1, head_map=head_map))
    torch.testing.assert_close(out["bake"], 0.5 * bake_loss(logits, head_map.mean((2, 3)), 3.0, 0.2))
    plan = SameClassPlan(SameClassOptions(partners=2))  # what the loaders draw from: M partners per anchor
    assert plan.extra_samples == 2 and epoch_indices(LABELS, 0, 1, 0, 1, plan).extra.shape == (len(LABELS), 2)


@pytest.mark.parametrize("options", [{"omega": 1.0}, {"omega": -0.1}, {"temperature": 0.0}, {"weight": -1.0}])
def test_out_of_range_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        BAKEConfig(**options)


@pytest.mark.parametrize("partners", [0, MAX_PARTNERS + 1, 1.5, "true", "nan"])
def test_out_of_range_partner_counts_are_config_errors(partners):
    with pytest.raises(ConfigError, match="batch.same_class.partners"):
        load_config(REPO / "configs/quickstart.yaml", [f"batch.same_class.partners={partners}"])


@pytest.mark.parametrize(
    "old, new",
    [
        ("loss.bake.partners=2", "batch.same_class.partners"),
        ("loss.dlb.joint_pass=true", "batch.last_batch.joint_pass"),
        ("loss.mixskd.alpha=0.2", "batch.mix_pairs.alpha"),
    ],
)
def test_an_option_that_moved_to_a_batch_plan_names_its_new_key(old, new, tmp_path):
    with pytest.raises(ConfigError, match=f"{old.split('=')[0]} is now {new}"):
        load_config(REPO / "configs/quickstart.yaml", [old])
    section, term, name = old.split("=")[0].split(".")
    config = tmp_path / "old.yaml"
    config.write_text(f"_base_: {REPO / 'configs/quickstart.yaml'}\n{section}:\n  {term}:\n    {name}: 1\n")
    with pytest.raises(ConfigError, match=f"is now {new}"):
        load_config(config)


def test_a_config_saved_before_the_options_moved_reads_them_at_their_new_keys():
    from core.typed_config import to_dict
    from engine.config import config_from_dict

    saved = to_dict(load_config(REPO / "configs/quickstart.yaml"))
    for section in ("same_class", "last_batch", "mix_pairs"):
        del saved["batch"][section]
    del saved["batch"]["plan"]
    saved["loss"]["bake"]["partners"], saved["loss"]["dlb"]["joint_pass"], saved["loss"]["mixskd"]["alpha"] = (
        2,
        True,
        0.2,
    )
    config = config_from_dict(saved)
    assert config.batch.same_class.partners == 2 and config.batch.last_batch.joint_pass
    assert config.batch.mix_pairs.alpha == 0.2 and config.batch.plan == "auto"
    assert to_dict(config) == to_dict(config_from_dict(to_dict(config)))


# ---------------------------------------------------------------- the sampler
LABELS = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 2, 0, 3, 1, 1, 1])  # class 2: 3 samples; class 3: one


def test_partners_are_other_samples_of_the_class_without_replacement_where_it_has_enough():
    partners = other_same_class(LABELS, torch.arange(14), 3, torch.Generator().manual_seed(0))
    assert partners.shape == (14, 3)
    for anchor, row in enumerate(partners.tolist()):
        assert all(LABELS[p] == LABELS[anchor] for p in row)
        if LABELS[anchor] == 3:
            assert row == [anchor] * 3  # alone in its class: itself
        else:
            assert anchor not in row
        if LABELS[anchor] in (0, 1):  # 3 and 5 other samples: all different
            assert len(set(row)) == 3
    # class 2 has 2 other samples for 3 draws: with replacement, from those two
    assert set(partners[4].tolist()) <= {5, 8}


def test_partners_are_drawn_uniformly_without_replacement():
    labels = torch.tensor([0, 0, 0, 0, 0, 1])
    draws = other_same_class(labels, torch.zeros(30_000, dtype=torch.long), 2, torch.Generator().manual_seed(0))
    assert (draws[:, 0] != draws[:, 1]).all() and (draws != 0).all() and (draws != 5).all()
    pairs = torch.bincount(4 * draws.min(1).values + draws.max(1).values, minlength=30).float() / len(draws)
    expected = torch.zeros(30)
    for a in range(1, 5):
        for b in range(a + 1, 5):
            expected[4 * a + b] = 1 / 6  # the 6 pairs of the 4 others, alike
    torch.testing.assert_close(pairs, expected, atol=0.01, rtol=0)
    order = torch.bincount(draws[:, 0], minlength=6).float() / len(draws)  # the first draw, uniform as well
    torch.testing.assert_close(order[1:5], torch.full((4,), 0.25), atol=0.01, rtol=0)


def test_the_partners_are_reproducible_and_sharded_like_the_anchors():
    def pairs(epoch, rank=0, world_size=1):
        indices = epoch_indices(LABELS, 5, epoch, rank, world_size, SameClassPlan(SameClassOptions(partners=3)))
        return indices.anchors, indices.extra

    anchors, partners = pairs(2)
    assert partners.shape == (14, 3) and torch.equal(LABELS[partners], LABELS[anchors].unsqueeze(1).expand(14, 3))
    assert torch.equal(partners, pairs(2)[1])  # (seed, epoch) decide
    assert not torch.equal(partners, pairs(3)[1])
    theirs = dict(zip(anchors.tolist(), partners.tolist()))
    for world_size in (2, 3):  # each rank's anchors keep the partners the 1-process run gives them
        for rank in range(world_size):
            mine, my_partners = pairs(2, rank, world_size)
            assert my_partners.tolist() == [theirs[a] for a in mine.tolist()]


# ---------------------------------------------------------------- the step and the settings
@pytest.mark.parametrize("partners, loader", [(3, "device"), (1, "device"), (3, "torchvision")])
def test_the_step_trains_on_the_anchors_and_all_their_partners(partners, loader):
    config = load_config(
        REPO / "configs/quickstart.yaml",
        [
            *SMOKE,
            "train.device=cpu",
            "loss.terms=[ce,bake]",
            f"batch.same_class.partners={partners}",
            "train.batch_size=8",
            "data.num_train=48",
            f"data.loader={loader}",
            "data.num_workers=0",
        ],
    )
    exp = build_experiment(config, CPU)
    exp.loaders.train.set_epoch(1)
    images, targets, indices = next(iter(exp.loaders.train))
    assert images.shape[0] == 8 * (partners + 1)
    groups = targets.view(partners + 1, 8)  # the anchors, then each anchor's k-th partner
    assert (groups == groups[0]).all() and not (indices.view(partners + 1, 8)[1:] == indices[:8]).any()
    losses = compute_losses(exp, images, targets, 1, indices)
    assert losses.logits.shape[0] == images.shape[0] and {"ce", "bake"} == set(losses.terms)


def test_the_method_config_holds_the_authors_settings(tmp_path):
    config = method_config(tmp_path, "bake")
    assert config.loss.terms == ["ce", "bake"] and config.loss.ce.weight == 1.0
    bake = config.loss.bake
    assert (bake.weight, bake.temperature, bake.omega, config.batch.same_class.partners) == (1.0, 4.0, 0.5, 3)
    assert config.batch.plan == "auto"  # the plan bake needs: same_class
    selfkd = REPO / "configs/cifar100/selfkd"
    alone, plus = (load_config(selfkd / f"cifar_resnet18_{name}.yaml") for name in ("bake", "bake_tffd"))
    assert alone.loss.terms == ["ce", "bake"] and plus.loss.terms == ["ce", "bake", "tffd"]
    assert alone.train.batch_size == 128  # anchors, as in Self-KD-Lib's BAKE: 512 images a step


def test_a_run_saved_before_the_options_moved_resumes(tmp_path):
    """An unfinished run whose config.yaml has an option at its old key (and none of the batch plans' keys) is
    the same config as today's, so it resumes rather than being refused as another config."""
    from core.errors import RunDirError
    from core.typed_config import to_dict
    from engine.run_dir import check_same_config

    new = to_dict(load_config(REPO / "configs/quickstart.yaml", ["loss.terms=[ce,bake]"]))
    old = to_dict(load_config(REPO / "configs/quickstart.yaml", ["loss.terms=[ce,bake]"]))
    del old["batch"]["same_class"], old["batch"]["plan"]
    old["loss"]["bake"]["partners"] = 3
    check_same_config(tmp_path, old, new)
    old["loss"]["bake"]["partners"] = 2
    with pytest.raises(RunDirError, match=r"batch.same_class.partners: 2 -> 3"):
        check_same_config(tmp_path, old, new)
