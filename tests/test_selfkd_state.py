"""Terms with parameters (BYOT's heads) and a batch plan with state across steps (DLB's last mini-batch): the
losses by hand, what is detached, where the parameters and the state go (optimizer, checkpoint, not the
exported model), and exact resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.errors import CheckpointError, ConfigError
from data.plans.last_batch import LastBatchOptions, LastBatchPlan
from engine.builder import build_experiment
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.config import load_config
from engine.distributed import DistContext
from engine.resume import CHECKPOINT_FORMAT, load_resume_state
from engine.step import apply_gradients, compute_losses
from losses import StepOutput, TrainingSetup
from losses.byot import BeYourOwnTeacher, BYOTConfig, feature_hint, soft_cross_entropy
from losses.dlb import DLBConfig, LastMiniBatchKD
from losses.kd import kd_loss
from scripts import evaluate

from conftest import REPO, SMOKE, attached, leaf_tensors, read_metrics, run_train, run_train_with_fault
from in_process import run_main

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
RUN = [*SMOKE, "data.num_test=128", "train.batch_size=32", "train.lr=0.05"]


def experiment(*overrides):
    return build_experiment(
        load_config(REPO / "configs/quickstart.yaml", [*SMOKE, "train.device=cpu", *overrides]), CPU
    )


# ---------------------------------------------------------------- BYOT: the pure functions
def test_soft_cross_entropy_by_hand_with_the_teacher_detached():
    student = torch.tensor([[1.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, math.log(3.0) * 2]], requires_grad=True)  # softmax at T=2: [1/4, 3/4]
    value = soft_cross_entropy(student, teacher, temperature=2.0)
    log_p = torch.log_softmax(torch.tensor([0.5, 0.0]), 0)
    expected = 4 * -(0.25 * log_p[0] + 0.75 * log_p[1])
    torch.testing.assert_close(value, expected)
    value.backward()
    assert teacher.grad is None and student.grad is not None
    # Its gradient is that of T^2 * KL: they differ by the teacher's entropy, a constant.
    kl_student = student.detach().clone().requires_grad_()
    kd_loss(kl_student, teacher, 2.0).backward()
    torch.testing.assert_close(student.grad, kl_student.grad)


def test_feature_hint_sums_the_squares_where_either_feature_is_positive():
    feature = torch.tensor([[1.0, -1.0, -2.0], [0.5, 0.0, 3.0]], requires_grad=True)
    deepest = torch.tensor([[0.0, -3.0, 1.0], [0.5, 2.0, 0.0]], requires_grad=True)
    # masked out: (0, 1), where both are negative; kept: 1, 9, 0, 4, 9
    value = feature_hint(feature, deepest)
    assert value.item() == 1 + 9 + 0 + 4 + 9
    value.backward()
    assert deepest.grad is None
    assert feature.grad.tolist() == [[2.0, 0.0, -6.0], [0.0, -4.0, 6.0]]


# ---------------------------------------------------------------- BYOT: the term and its heads
SHAPES = ((16, 16, 16), (32, 8, 8), (64, 4, 4))  # resnet20 on 16x16 images


def byot(**options):
    return attached(BeYourOwnTeacher(BYOTConfig(**options)), SHAPES)


def test_byot_heads_bring_every_shallow_stage_to_the_deepest_width_and_resolution():
    term = byot()
    assert term.stages == [1, 2]
    strides = [[m.stride[0] for m in head if isinstance(m, torch.nn.Conv2d)] for head in term.heads]
    assert strides == [[1, 4, 1], [1, 2, 1]]
    out = [head(torch.zeros(3, *shape)) for head, shape in zip(term.heads, SHAPES)]
    assert [tuple(o.shape) for o in out] == [(3, 64), (3, 64)]
    assert [c.out_features for c in term.classifiers] == [5, 5]
    assert byot(stages=[2]).stages == [2]


def test_byot_loss_is_the_weighted_sum_of_its_parts_with_the_deepest_exit_detached():
    torch.manual_seed(0)
    term = byot(alpha=0.3, temperature=2.0, beta=0.5)
    feats, logits, targets = leaf_tensors(SHAPES)
    losses = term(StepOutput(logits, feats, targets, epoch=1))
    deepest = feats[-1].mean(dim=(2, 3))
    features = [head(feats[s - 1]) for s, head in zip(term.stages, term.heads)]
    exits = [c(f) for c, f in zip(term.classifiers, features)]
    ce = sum(F.cross_entropy(z, targets) for z in [*exits, logits])
    torch.testing.assert_close(losses["byot_ce"], 0.7 * ce)
    torch.testing.assert_close(losses["byot_kd"], 0.3 * sum(soft_cross_entropy(z, logits, 2.0) for z in exits))
    torch.testing.assert_close(losses["byot_hint"], 0.5 * sum(feature_hint(f, deepest) for f in features))
    # The deepest exit teaches: the distillation and the hint send it no gradient.
    (losses["byot_kd"] + losses["byot_hint"]).backward()
    assert logits.grad is None or not logits.grad.any()
    assert feats[-1].grad is None or not feats[-1].grad.any()
    assert feats[0].grad.abs().sum() > 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"stages": [3]}, "heads go on stages 1..2"),
        ({"stages": [1, 1]}, "lists a stage twice"),
        ({"stages": []}, "needs at least one head"),
    ],
)
def test_byot_stage_options_that_do_not_fit_the_model_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        BeYourOwnTeacher(BYOTConfig(**options)).check_features(SHAPES)
    with pytest.raises(ConfigError, match="not a square multiple"):
        BeYourOwnTeacher(BYOTConfig()).check_features(((8, 6, 6), (8, 4, 4)))


def test_byot_heads_are_trained_and_checkpointed_but_not_exported(tmp_path):
    args = [*RUN, "loss.terms=[byot,tffd]"]
    exp = build_experiment(load_config(REPO / "configs/quickstart.yaml", [*args, "train.device=cpu"]), CPU)
    head_ids = {id(p) for p in exp.terms[0].parameters()}
    trained = {id(p) for group in exp.optimizer.param_groups for p in group["params"]}
    assert head_ids and head_ids <= trained and {id(p) for p in exp.model.parameters()} <= trained
    assert head_ids.isdisjoint(id(p) for p in exp.model.parameters())
    # A real run (the same config and seed): the heads train, are in last.pt's "terms" and not in its
    # exported "model", which scripts/evaluate.py loads on its own.
    run_dir = tmp_path / "run"
    result = run_train(*args, "--run-dir", str(run_dir), check=True)
    heads = sum(p.numel() for p in exp.terms[0].parameters())
    assert f"(+{heads / 1e6:.3f}M in loss terms, trained, not exported)" in result.stdout
    checkpoint = load_checkpoint(run_dir / "last.pt")
    assert set(checkpoint["model"]) == set(exp.model.state_dict())
    assert set(checkpoint["terms"][0]) == set(exp.terms[0].state_dict())
    initial = exp.terms[0].state_dict()
    assert all(not torch.equal(checkpoint["terms"][0][key], initial[key]) for key in initial if key.endswith("weight"))
    evaluated = run_main(evaluate.main, [str(run_dir / "best.pt")], check=True)
    metrics = read_metrics(run_dir)
    assert metrics["finished"] and metrics["best_acc1"] > 100 / 10 + 15, metrics["best_acc1"]
    assert {"train_byot_ce", "train_byot_kd", "train_byot_hint", "train_tffd_intra"} <= set(metrics["history"][-1])
    assert f"{metrics['best_acc1']:.2f}" in evaluated.stdout


# ---------------------------------------------------------------- DLB: the plan's indices, its batch, the loss
def test_second_views_are_the_anchors_themselves_on_every_rank():
    from data.sharding import epoch_indices

    labels = torch.arange(11) % 3
    for world_size in (1, 2, 3):
        for rank in range(world_size):
            indices = epoch_indices(labels, 5, 2, rank, world_size, LastBatchPlan(LastBatchOptions()))
            assert torch.equal(indices.extra.squeeze(1), indices.anchors)


def batch(step: int, size: int = 2):
    """A loader batch [view 0; view 1] of ``size`` samples: images hold (step, view, sample)."""
    images = torch.stack([torch.full((1, 2, 2), 100.0 * step + 10 * view + i) for view in (0, 1) for i in range(size)])
    targets = torch.tensor([step * 10 + i for i in range(size)] * 2)
    indices = targets.clone()
    return images, targets, indices


def test_dlb_trains_on_the_new_batch_and_the_last_batchs_second_view():
    term, plan = LastMiniBatchKD(DLBConfig(weight=2.0, temperature=3.0)), LastBatchPlan(LastBatchOptions())
    assert term.batch_plan == "last_batch"
    (images,), targets, indices, first = plan.compose(*batch(1))
    assert images[:, 0, 0, 0].tolist() == [100, 101] and targets.tolist() == [10, 11]
    assert first.teacher_logits is None
    first_logits = torch.randn(2, 4, requires_grad=True)
    first = plan.complete(first, first_logits, model=None)
    assert term(StepOutput(first_logits, [], targets, 1, batch=first))["dlb"].item() == 0  # first step: CE only
    parts, targets, indices, second = plan.compose(*batch(2))  # two passes: B_2 view 0, then B_1 view 1
    assert [part[:, 0, 0, 0].tolist() for part in parts] == [[200, 201], [110, 111]]
    assert targets.tolist() == [20, 21, 10, 11] and indices.tolist() == [20, 21, 10, 11]
    assert torch.equal(second.teacher_logits, first_logits.detach()) and not second.teacher_logits.requires_grad
    logits = torch.randn(4, 4, requires_grad=True)
    second = plan.complete(second, logits, model=None)
    value = term(StepOutput(logits, [], targets, 1, batch=second))["dlb"]
    torch.testing.assert_close(value, 2.0 * kd_loss(logits[2:], first_logits, 3.0))
    value.backward()
    assert first_logits.grad is None and not logits.grad[:2].any() and logits.grad[2:].any()
    # The memory now holds B_2: its view 1 and the logits of its view 0 from this step.
    assert plan.memory["images"][:, 0, 0, 0].tolist() == [210, 211]
    assert torch.equal(plan.logits, logits[:2].detach())


def test_dlb_memory_goes_through_the_state_dict():
    plan = LastBatchPlan(LastBatchOptions())
    first = plan.compose(*batch(1))
    plan.complete(first.batch, torch.randn(2, 4), model=None)
    restored = LastBatchPlan(LastBatchOptions())
    restored.load_state_dict(plan.state_dict())
    saved, got = plan.get_extra_state(), restored.get_extra_state()
    assert set(saved) == {"images", "targets", "indices", "logits"}
    assert all(torch.equal(got[name], value) for name, value in saved.items())
    fresh = LastBatchPlan(LastBatchOptions())
    fresh.load_state_dict(LastBatchPlan(LastBatchOptions()).state_dict())  # before any step: an empty memory
    assert fresh.memory["images"] is None and fresh.logits is None


def test_dlb_steps_forward_twice_the_batch_after_the_first():
    exp = experiment("loss.terms=[ce,dlb]", "train.batch_size=16", "data.num_train=48")
    exp.loaders.train.set_epoch(1)
    sizes = []
    for images, targets, indices in exp.loaders.train:
        assert images.shape[0] == 32  # the loader: 16 samples, each in two views
        losses = compute_losses(exp, images, targets, 1, indices)
        sizes.append(losses.logits.shape[0])
        apply_gradients(exp, losses.total)
    assert sizes == [16, 32, 32]


def test_a_checkpoint_of_per_rank_state_resumes_only_with_as_many_processes(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "rank_plan": [{"_extra_state": {}}] * 2})
    assert load_resume_state(path, world_size=2)["rank_plan"]
    with pytest.raises(CheckpointError, match=r"from 2 processes; resume it with 2 \(torchrun --nproc_per_node 2\)"):
        load_resume_state(path, world_size=1)
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "rank_plan": None})
    assert load_resume_state(path, world_size=4)["rank_plan"] is None


def test_a_checkpoint_from_before_the_batch_plans_gives_dlbs_memory_to_the_plan(tmp_path):
    """Before the batch plans, DLB's memory was its loss term's per-rank state (``rank_terms``)."""
    memory = {"images": torch.ones(2, 3, 4, 4), "targets": torch.tensor([1, 2]), "logits": torch.zeros(2, 5)}
    path = tmp_path / "last.pt"
    save_checkpoint(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "terms": [{}, {"_extra_state": memory}],
            "rank_terms": [[None, {"_extra_state": memory}], [None, {"_extra_state": {}}]],
        },
    )
    state = load_resume_state(path, world_size=2)
    assert "rank_terms" not in state and state["terms"] == [{}, {}]
    assert state["rank_plan"][1] == {"_extra_state": {}}
    plan = LastBatchPlan(LastBatchOptions())
    plan.load_state_dict(state["rank_plan"][0])
    assert torch.equal(plan.memory["images"], memory["images"]) and torch.equal(plan.logits, memory["logits"])


# ---------------------------------------------------------------- runs: learning, exact resume
def test_byot_alone_and_dlb_alone_and_with_tffd_learn(tmp_path):  # byot + tffd: above
    for terms, logged in (("byot", "train_byot_kd"), ("ce,dlb", "train_dlb"), ("ce,dlb,tffd", "train_dlb")):
        run_dir = tmp_path / terms
        run_train(*RUN, f"loss.terms=[{terms}]", "--run-dir", str(run_dir), check=True)
        metrics = read_metrics(run_dir)
        assert metrics["finished"] and metrics["best_acc1"] > 100 / 10 + 15, (terms, metrics["best_acc1"])
        assert logged in metrics["history"][-1]


def test_a_resumed_run_with_heads_and_last_batch_memory_is_bit_identical(tmp_path):
    """Stopped in epoch 2 and resumed, a deterministic CPU run with BYOT's heads (parameters, their
    momentum) and DLB's memory (the last batch) ends as the uninterrupted one."""
    args = [*RUN, "train.epochs=3", "train.deterministic=true", "loss.terms=[byot,dlb]"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_train(*args, "--run-dir", str(reference), check=True)
    stopped = run_train_with_fault("sigterm", 21, *args, "--run-dir", str(resumed))
    assert stopped.returncode == 143 and read_metrics(resumed)["epochs_done"] == 1, stopped.stderr[-2000:]
    assert load_checkpoint(resumed / "last.pt")["rank_plan"][0]["_extra_state"]["images"].shape[0] == 32
    run_train(*args, "--run-dir", str(resumed), check=True)
    ours, theirs = (load_checkpoint(d / "last.pt") for d in (resumed, reference))
    assert all(torch.equal(ours["model"][key], value) for key, value in theirs["model"].items())
    assert all(torch.equal(ours["terms"][0][key], value) for key, value in theirs["terms"][0].items())
    assert read_metrics(resumed)["history"][-1]["train_loss"] == read_metrics(reference)["history"][-1]["train_loss"]


PLAN_RUNS = {
    "plain": "ce,tffd",
    "class_pairs": "ce,cs_kd",
    "same_class": "ce,bake",
    "two_views": "ce,ddgsd",
    "mix_pairs": "mixskd",
}  # last_batch: the test above, with BYOT's heads


@pytest.mark.parametrize("plan", sorted(PLAN_RUNS))
def test_a_killed_and_resumed_run_of_every_batch_plan_is_bit_identical(plan, tmp_path):
    """Killed in epoch 2 and resumed, a deterministic CPU run under each plan ends as the uninterrupted one: its
    extra samples (partners, views) and its random draws (mixup's lam and permutation) come back the same."""
    args = [
        *SMOKE,
        "data.num_train=96",
        "data.num_test=32",
        "train.batch_size=32",
        "train.epochs=3",
        "train.deterministic=true",
        f"loss.terms=[{PLAN_RUNS[plan]}]",
        "batch.same_class.partners=1",
    ]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_train(*args, "--run-dir", str(reference), check=True)
    stopped = run_train_with_fault("sigterm", 5, *args, "--run-dir", str(resumed))
    assert stopped.returncode == 143 and read_metrics(resumed)["epochs_done"] == 1, stopped.stderr[-2000:]
    run_train(*args, "--run-dir", str(resumed), check=True)
    ours, theirs = (load_checkpoint(d / "last.pt") for d in (resumed, reference))
    assert all(torch.equal(ours["model"][key], value) for key, value in theirs["model"].items())
    assert [record["train_loss"] for record in read_metrics(resumed)["history"]] == [
        record["train_loss"] for record in read_metrics(reference)["history"]
    ]


# ---------------------------------------------------------------- mixed labels (Mixup, CutMix)
def test_ps_kd_and_byot_take_mixed_labels_in_place_of_the_one_hot_ones():
    from losses.ps_kd import ProgressiveSelfKD, PSKDConfig

    term = ProgressiveSelfKD(PSKDConfig(alpha_T=0.5))
    term.attach(TrainingSetup(num_samples=2, num_classes=3, epochs=2, feature_shapes=()))
    term.past[:] = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    term.seen[:] = True
    logits, targets, indices = torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([1, 0])
    mixed = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.7, 0.3]])
    value = term(StepOutput(logits, [], targets, epoch=2, target_probs=mixed, indices=indices))["ps_kd"]
    expected_target = 0.5 * mixed + 0.5 * torch.tensor([[0.6, 0.2, 0.2], [0.2, 0.3, 0.5]])  # alpha_t = 0.5 * 2/2
    torch.testing.assert_close(value, -(expected_target * logits.log_softmax(1)).sum(1).mean())

    heads = byot(alpha=0.0)
    feats = [torch.randn(2, *shape) for shape in SHAPES]
    final = torch.randn(2, 5)
    mixed = torch.tensor([[0.5, 0.5, 0, 0, 0], [0, 0, 0.2, 0.8, 0]])
    losses = heads(StepOutput(final, feats, torch.tensor([0, 2]), 1, target_probs=mixed))
    exits = [c(h(feats[s - 1])) for s, h, c in zip(heads.stages, heads.heads, heads.classifiers)]
    torch.testing.assert_close(losses["byot_ce"], sum(F.cross_entropy(z, mixed) for z in [*exits, final]))


def test_heads_and_last_batch_memory_compile_into_the_same_step(monkeypatch):
    """train.compile compiles the model and the terms as one graph: BYOT's heads and DLB's memory
    (an attribute the forward rewrites) give the eager step's numbers."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    overrides = ["loss.terms=[byot,dlb,tffd]", "data.num_train=64", "train.batch_size=32"]
    eager, compiled = experiment(*overrides), experiment(*overrides, "train.compile=true")
    eager.loaders.train.set_epoch(1)
    with torch._dynamo.config.patch(error_on_recompile=False):
        for images, targets, indices in eager.loaders.train:
            expected, got = (compute_losses(exp, images, targets, 1, indices) for exp in (eager, compiled))
            assert set(got.terms) == {"byot_ce", "byot_kd", "byot_hint", "dlb", "tffd_inter", "tffd_intra"}
            for name, value in expected.terms.items():
                torch.testing.assert_close(got.terms[name], value, rtol=1e-5, atol=1e-7)
            apply_gradients(eager, expected.total)
            apply_gradients(compiled, got.total)
    assert expected.terms["dlb"] > 0  # the second step distilled from the first one's memory
    torch.testing.assert_close(compiled.plan.logits, eager.plan.logits)
