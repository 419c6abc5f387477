"""Teacher-free baselines beside Tf-FD: Tf-KD_reg and the batch transforms (Mixup, CutMix, Cutout), on
hand-computed tensors, then trained alone and with Tf-FD, and resumed exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import data.batch_transforms as bt
from core.errors import ConfigError
from data.batch_transforms import CutMix, CutMixConfig, Cutout, CutoutConfig, Mixup, MixupConfig, mix
from losses import StepOutput, TrainingSetup
from losses.ce import CEConfig, CrossEntropy
from losses.tf_kd_reg import TfKDRegConfig, TfKDRegularization, tf_kd_reg_loss, virtual_teachers

from conftest import REPO, SMOKE, attached, method_config, read_metrics, run_train, run_train_with_fault


# ---------------------------------------------------------------- Tf-KD_reg
def test_virtual_teacher_by_hand():
    # K = 3, correct_prob 0.99, T = 2: scores [0.99, 0.005, 0.005] / 2, softmax
    q = virtual_teachers(3, 0.99, 2.0)
    e_y, e_k = math.exp(0.99 / 2), math.exp(0.005 / 2)
    torch.testing.assert_close(q[1], torch.tensor([e_k, e_y, e_k]) / (e_y + 2 * e_k))
    assert q.sum(1).allclose(torch.ones(3))


def test_tf_kd_reg_value_and_gradient():
    logits = torch.tensor([[1.0, -0.5, 2.0], [0.0, 0.3, -1.0]], requires_grad=True)
    targets = torch.tensor([2, 0])
    term = attached(TfKDRegularization(TfKDRegConfig(weight=0.5, temperature=4.0, correct_prob=0.9)), [], 3)
    loss = term(StepOutput(logits, [], targets, 1))["tf_kd_reg"]
    q = virtual_teachers(3, 0.9, 4.0)[targets]
    p = logits.detach().softmax(1)
    expected = 0.5 * (q * (q / p).log()).sum(1).mean()  # KL(q || p), batch mean
    torch.testing.assert_close(loss, expected)
    loss.backward()
    torch.testing.assert_close(logits.grad, 0.5 * (p - q) / 2)  # d KL / dz = p - q; the teacher is constant


def test_tf_kd_reg_mixes_its_virtual_teachers_like_the_labels():
    logits = torch.randn(2, 4)
    mixed = torch.tensor([[0.3, 0.7, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    term = attached(TfKDRegularization(TfKDRegConfig(weight=1.0)), [], 4)
    loss = term(StepOutput(logits, [], torch.tensor([1, 2]), 1, target_probs=mixed))["tf_kd_reg"]
    q = virtual_teachers(4, 0.99, 20.0)
    torch.testing.assert_close(loss, tf_kd_reg_loss(logits, torch.stack([0.3 * q[0] + 0.7 * q[1], q[2]])))


def test_ce_against_mixed_labels_is_the_mixture_of_the_two_cross_entropies():
    logits, a, b, lam = torch.randn(5, 7), torch.randint(0, 7, (5,)), torch.randint(0, 7, (5,)), 0.3
    probs = lam * F.one_hot(a, 7).float() + (1 - lam) * F.one_hot(b, 7).float()
    loss = CrossEntropy(CEConfig())(StepOutput(logits, [], a, 1, target_probs=probs))["ce"]
    torch.testing.assert_close(loss, lam * F.cross_entropy(logits, a) + (1 - lam) * F.cross_entropy(logits, b))


# ---------------------------------------------------------------- batch transforms
def batch(n=4, k=3, side=6):
    images = torch.arange(n * 3 * side * side, dtype=torch.float32).view(n, 3, side, side)
    return images, F.one_hot(torch.arange(n) % k, k).float()


def test_mix_by_hand():
    images, labels = batch()
    permutation = torch.tensor([1, 0, 3, 2])
    mixed, mixed_labels = mix(images, labels, 0.25, permutation)
    torch.testing.assert_close(mixed[0], 0.25 * images[0] + 0.75 * images[1])
    torch.testing.assert_close(mixed_labels[2], 0.25 * labels[2] + 0.75 * labels[3])


def test_mixup_draws_one_lam_per_batch_and_mixes_labels_alike():
    torch.manual_seed(0)
    images, labels = batch()
    mixed, mixed_labels = Mixup(MixupConfig(alpha=1.0))(images, labels)
    assert mixed_labels.sum(1).allclose(torch.ones(4))
    lam = mixed_labels[0, 0].item()  # image 0 is class 0, mixed with another class's image
    partner = next(j for j in range(4) if torch.allclose(mixed[0], lam * images[0] + (1 - lam) * images[j]))
    torch.testing.assert_close(mixed_labels[0], lam * labels[0] + (1 - lam) * labels[partner])


def test_cutmix_pastes_a_box_and_weights_the_labels_by_its_area(monkeypatch):
    images, labels = batch(side=8)
    monkeypatch.setattr(bt, "beta_sample", lambda alpha: 0.75)  # sides sqrt(0.25) * 8 = 4
    monkeypatch.setattr(torch, "randperm", lambda n, device=None: torch.tensor([1, 0, 3, 2]))
    centres = iter([torch.tensor(1), torch.tensor(5)])  # centre (y 1, x 5): rows 0..2 (clipped), cols 3..6
    monkeypatch.setattr(bt.torch, "randint", lambda low, high, size, **kw: next(centres))
    out, out_labels = CutMix(CutMixConfig(alpha=1.0, prob=1.0))(images, labels)
    box = (slice(None), slice(0, 3), slice(3, 7))
    torch.testing.assert_close(out[0][box], images[1][box])
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[0:3, 3:7] = False
    torch.testing.assert_close(out[0][:, outside], images[0][:, outside])
    lam = 1 - 12 / 64  # the clipped box's area, not 1 - 0.75
    torch.testing.assert_close(out_labels[0], lam * labels[0] + (1 - lam) * labels[1])


def test_cutmix_leaves_a_batch_alone_with_probability_one_minus_prob():
    images, labels = batch()
    out, out_labels = CutMix(CutMixConfig(prob=0.0))(images, labels)
    assert out is images and out_labels is labels


def test_cutout_zeroes_one_clipped_hole_per_image_and_keeps_the_labels(monkeypatch):
    centres = iter([torch.tensor([5, 0]).view(2, 1, 1), torch.tensor([5, 7]).view(2, 1, 1)])  # y, then x
    monkeypatch.setattr(bt.torch, "randint", lambda low, high, size, **kw: next(centres))
    images, labels = batch(n=2, side=10)
    out, out_labels = Cutout(CutoutConfig(length=4))(images + 1, labels)
    assert out_labels is labels
    holes = [(out[i, 0] == 0) for i in range(2)]
    expected = torch.zeros(2, 10, 10, dtype=torch.bool)
    expected[0, 3:7, 3:7] = True  # centre (5, 5): rows and cols 3..6
    expected[1, 0:2, 5:9] = True  # centre (0, 7): rows clipped to 0..1, cols 5..8
    assert torch.equal(torch.stack(holes), expected)
    assert torch.equal(out[:, :, ~expected[0]][0], (images + 1)[0][:, ~expected[0]])


def test_an_unknown_or_repeated_transform_is_a_config_error():
    from engine.config import load_config

    config = load_config(REPO / "configs/quickstart.yaml", ["batch.transforms=[mixup,mixup]"])
    with pytest.raises(ConfigError, match="lists a transform twice"):
        bt.build_batch_transforms(config.batch.transforms, config.batch)
    config = load_config(REPO / "configs/quickstart.yaml", ["batch.transforms=[mixupp]"])
    with pytest.raises(ConfigError, match="unknown batch transform 'mixupp'; known batch transforms: cutmix, cutout"):
        bt.build_batch_transforms(config.batch.transforms, config.batch)


# ---------------------------------------------------------------- training, alone and with Tf-FD
RUN = [*SMOKE, "data.num_test=128", "train.batch_size=32", "train.lr=0.05"]
METHODS = {
    "tf_kd_reg": ["loss.ce.weight=0.9", "loss.tf_kd_reg.weight=0.1"],
    "cs_kd": [],
    "ps_kd": [],
    "mixup": ["batch.transforms=[mixup]"],
    "cutmix": ["batch.transforms=[cutmix]", "batch.cutmix.prob=1.0"],
    "cutout": ["batch.transforms=[cutout]"],
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(*overrides)``: the run directory of a finished RUN with ``overrides``, trained once for
    all the tests that read it."""
    runs = {}

    def train(*overrides: str):
        if overrides not in runs:
            run_dir = tmp_path_factory.mktemp("run") / "run"
            run_train(*RUN, *overrides, "--run-dir", str(run_dir), check=True)
            runs[overrides] = run_dir
        return runs[overrides]

    return train


@pytest.mark.parametrize("with_tffd", [False, True], ids=["alone", "with_tffd"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_epochs_learn_alone_and_with_tffd(method, with_tffd, trained):
    terms = {"tf_kd_reg": ["ce", "tf_kd_reg"], "cs_kd": ["ce", "cs_kd"], "ps_kd": ["ps_kd"]}.get(method, ["ce"])
    terms += ["tffd"] if with_tffd else []
    overrides = [o for o in METHODS[method] if not o.startswith("loss.terms=")] + [f"loss.terms=[{','.join(terms)}]"]
    run_dir = trained(*overrides)
    metrics = read_metrics(run_dir)
    assert metrics["finished"] and metrics["best_acc1"] > 100 / 10 + 15, metrics["best_acc1"]  # chance: 10%
    names = set(metrics["history"][-1])
    assert ("train_tffd_intra" in names) == with_tffd and ("train_tf_kd_reg" in names) == (method == "tf_kd_reg")
    assert ("train_cs_kd" in names) == (method == "cs_kd") and ("train_ps_kd" in names) == (method == "ps_kd")


@pytest.mark.parametrize("terms", ["ce,tf_kd_reg,tffd", "ps_kd,tffd"])
def test_a_resumed_run_with_batch_transforms_and_state_is_bit_identical(tmp_path, terms):
    """The transforms draw from the generators the checkpoint saves, and PS-KD's past predictions are
    in it: stopped in epoch 2 and resumed, a deterministic CPU run ends as the uninterrupted one."""
    args = [
        *RUN,
        "data.num_train=256",
        "train.epochs=3",
        "train.deterministic=true",  # 8 steps per epoch
        "batch.transforms=[mixup,cutmix,cutout]",
        "batch.cutmix.prob=0.5",
        f"loss.terms=[{terms}]",
    ]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_train(*args, "--run-dir", str(reference), check=True)
    stopped = run_train_with_fault("sigterm", 13, *args, "--run-dir", str(resumed))
    assert stopped.returncode == 143 and read_metrics(resumed)["epochs_done"] == 1, stopped.stderr[-2000:]
    run_train(*args, "--run-dir", str(resumed), check=True)
    from engine.checkpoint import load_checkpoint

    ours, theirs = (load_checkpoint(d / "last.pt")["model"] for d in (resumed, reference))
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    assert read_metrics(resumed)["history"][-1]["test_acc1"] == read_metrics(reference)["history"][-1]["test_acc1"]


@pytest.mark.parametrize(
    "method, terms, transforms",
    [
        ("tf_kd_reg", ["ce", "tf_kd_reg"], []),
        ("mixup", ["ce"], ["mixup"]),
        ("cutmix", ["ce"], ["cutmix"]),
        ("cutout", ["ce"], ["cutout"]),
        ("cs_kd", ["ce", "cs_kd"], []),
        ("ps_kd", ["ps_kd"], []),
    ],
)
def test_method_configs_hold_the_original_settings(method, terms, transforms, tmp_path):

    config = method_config(tmp_path, method)
    assert (config.loss.terms, config.batch.transforms) == (terms, transforms)
    assert (config.batch.mixup.alpha, config.batch.cutmix.alpha, config.batch.cutmix.prob) == (1.0, 1.0, 0.5)
    assert config.batch.cutout.length == 8
    if method == "tf_kd_reg":
        assert (config.loss.ce.weight, config.loss.tf_kd_reg.weight, config.loss.tf_kd_reg.temperature) == (
            0.9,
            0.1,
            20.0,
        )


# ---------------------------------------------------------------- CS-KD: the sampler, the loaders, the loss
LABELS = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 2, 0, 3])  # class 3 has one sample: its own partner


def test_class_pairs_are_same_class_reproducible_and_sharded_like_the_anchors():
    from data.plans.class_pairs import ClassPairsPlan
    from data.sharding import epoch_indices

    def pairs(epoch, rank=0, world_size=1):
        indices = epoch_indices(LABELS, 5, epoch, rank, world_size, ClassPairsPlan())
        return indices.anchors, indices.extra.squeeze(1)

    anchors, partners = pairs(2)
    assert torch.equal(LABELS[partners], LABELS[anchors])
    assert partners[anchors == 10].tolist() == [10]
    assert torch.equal(partners, pairs(2)[1])  # (seed, epoch) decide
    assert not torch.equal(partners, pairs(3)[1])
    theirs = dict(zip(anchors.tolist(), partners.tolist()))
    for world_size in (2, 3):  # each rank's anchors keep the partners the 1-process run gives them
        for rank in range(world_size):
            mine, my_partners = pairs(2, rank, world_size)
            assert my_partners.tolist() == [theirs[a] for a in mine.tolist()]


def test_partners_are_drawn_uniformly_from_the_class():
    from data.plans.class_pairs import same_class_partner

    labels = torch.tensor([0, 0, 0, 0, 1])
    draws = same_class_partner(labels, torch.zeros(40_000, dtype=torch.long), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=5).float() / len(draws)
    torch.testing.assert_close(frequencies[:4], torch.full((4,), 0.25), atol=0.01, rtol=0)
    assert frequencies[4] == 0


@pytest.mark.parametrize("loader", ["device", "torchvision"])
def test_both_loaders_append_each_batchs_partners(loader):
    from data import build_dataset, build_loaders
    from data.plans.class_pairs import ClassPairsPlan
    from data.plans.plain import PlainPlan
    from engine.config import load_config

    config = load_config(REPO / "configs/quickstart.yaml", [*RUN, f"data.loader={loader}", "data.num_workers=0"])
    dataset = build_dataset(config.data)
    plain = build_loaders(config.data, dataset, 32, 64, "cpu", 0, PlainPlan())
    paired = build_loaders(config.data, dataset, 32, 64, "cpu", 0, ClassPairsPlan())
    for source in (plain.train, paired.train):
        source.set_epoch(2)
    assert len(plain.train) == len(paired.train) == 16
    for (images, labels, indices), (both, both_labels, both_indices) in zip(plain.train, paired.train):
        assert both.shape[0] == 2 * images.shape[0] and torch.equal(both_labels[:32], labels)
        assert torch.equal(both_labels[32:], labels)  # each partner is of its anchor's class
        assert torch.equal(both_indices[:32], indices) and torch.equal(dataset.train_labels[both_indices], both_labels)
        if loader == "device":  # the anchors' crops and flips are those of the plain loader
            assert torch.equal(both[:32], images)


def test_cs_kd_distils_the_partner_forwarded_without_gradient_into_the_anchor():
    from data.plans.class_pairs import ClassPairsPlan
    from losses.cs_kd import ClassWiseKD, CSKDConfig
    from losses.kd import kd_loss

    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 4)
    calls = []

    def model(x):
        calls.append(torch.is_grad_enabled())
        return linear(x), []

    term, plan = ClassWiseKD(CSKDConfig(weight=0.5, temperature=2.0)), ClassPairsPlan()
    assert term.batch_plan == "class_pairs"
    batch_images, batch_targets = torch.randn(6, 6), torch.tensor([0, 1, 2, 0, 1, 2])
    (anchors,), targets, indices, batch = plan.compose(batch_images, batch_targets, torch.arange(6))
    assert torch.equal(indices, torch.arange(3))
    assert torch.equal(anchors, batch_images[:3]) and torch.equal(batch.partner_images, batch_images[3:])
    assert torch.equal(targets, batch_targets[:3]) and batch.partner_logits is None
    logits = linear(anchors)
    batch = plan.complete(batch, logits, model)
    assert calls == [False], "the partners are forwarded under torch.no_grad"
    loss = term(StepOutput(logits, [], targets, 1, batch=batch, model=model))["cs_kd"]
    expected = 0.5 * kd_loss(linear(anchors), linear(batch_images[3:]).detach(), 2.0)
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, linear.weight)
    (expected_grad,) = torch.autograd.grad(expected, linear.weight)
    torch.testing.assert_close(grad, expected_grad)


# ---------------------------------------------------------------- PS-KD: per-sample state
def test_ps_kd_first_epoch_is_ce_then_distils_last_epochs_predictions():
    from losses.ps_kd import ProgressiveSelfKD, PSKDConfig

    term = ProgressiveSelfKD(PSKDConfig(alpha_T=0.8))
    term.attach(TrainingSetup(num_samples=5, num_classes=3, epochs=4, feature_shapes=()))
    indices, targets = torch.tensor([3, 1]), torch.tensor([2, 0])
    first = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, 0.0]])
    loss = term(StepOutput(first, [], targets, 1, indices=indices))["ps_kd"]
    torch.testing.assert_close(loss, F.cross_entropy(first, targets))  # no past prediction yet
    torch.testing.assert_close(term.past[indices], first.softmax(1))
    assert term.seen.tolist() == [False, True, False, True, False]

    second = torch.tensor([[0.0, 1.0, 0.0], [2.0, 1.0, -1.0]], requires_grad=True)
    loss = term(StepOutput(second, [], targets, 2, indices=indices))["ps_kd"]
    alpha = 0.8 * 2 / 4
    target = (1 - alpha) * F.one_hot(targets, 3).float() + alpha * first.softmax(1)
    torch.testing.assert_close(loss, -(target * second.detach().log_softmax(1)).sum(1).mean())
    loss.backward()
    torch.testing.assert_close(second.grad, (second.detach().softmax(1) - target) / 2)  # the past is constant
    torch.testing.assert_close(term.past[indices], second.detach().softmax(1))
    assert term.past[[0, 2, 4]].abs().sum() == 0


def test_ps_kd_state_is_in_the_checkpoint(trained):
    from engine.checkpoint import load_checkpoint

    run_dir = trained("loss.terms=[ps_kd]")  # the run test_two_epochs_learn_alone_and_with_tffd[ps_kd-alone] reads
    (past_state,) = [state for state in load_checkpoint(run_dir / "last.pt")["terms"] if "past" in state]
    assert past_state["past"].shape == (512, 10) and bool(past_state["seen"].all())
    torch.testing.assert_close(past_state["past"].sum(1), torch.ones(512))
