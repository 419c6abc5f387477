"""DLB's step as its authors run it (Meta-knowledge-Lab/DLB ``dlb.py``): two forward passes in train mode,
the new batch's view 0 and then the previous batch's view 1, CE over both passes' outputs, KD on the
previous batch against the logits its own pass gave one step earlier. A reference written here from
their code is checked against the full training step on a BatchNorm network, over steps that include a
partial last batch and an epoch boundary: the loss, every gradient, BatchNorm's running statistics and
the logits kept for the next step."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from engine.builder import build_experiment
from engine.config import load_config
from engine.distributed import DistContext
from engine.step import compute_losses

from conftest import REPO, SMOKE

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
ALPHA, T = 0.7, 3.0
DLB = [
    "loss.terms=[ce,dlb]",
    f"loss.dlb.weight={ALPHA}",
    f"loss.dlb.temperature={T}",
    "train.batch_size=16",
    "data.num_train=40",
]  # two steps of 16 new samples and a partial one of 8 per epoch


def experiment(*overrides):
    config = load_config(REPO / "configs/quickstart.yaml", [*SMOKE, "train.device=cpu", *DLB, *overrides])
    return build_experiment(config, CPU)


def logits_of(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def authors_step(model, view0, labels, previous):
    """Their step, written out: the loss and the logits of the new batch (kept as the next step's teacher)."""
    out = logits_of(model(view0))
    if previous is None:  # the run's first step: CE only
        return F.cross_entropy(out, labels), out
    pre_view1, pre_labels, pre_out = previous
    out_pre = logits_of(model(pre_view1))  # a second pass, with gradient, in train mode
    ce = F.cross_entropy(torch.cat((out_pre, out)), torch.cat((pre_labels, labels)))
    kd = (
        F.kl_div(F.log_softmax(out_pre / T, dim=1), F.softmax(pre_out.detach() / T, dim=1), reduction="batchmean")
        * T
        * T
    )
    return ce + ALPHA * kd, out


def bn_state(model) -> dict:
    return {name: value for name, value in model.state_dict().items() if "running" in name or "num_batches" in name}


def test_the_default_dlb_step_is_the_authors_two_pass_step():
    exp = experiment()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in exp.model.modules())
    reference = copy.deepcopy(exp.model)
    previous, sizes = None, []
    for epoch in (1, 2):  # the memory carries over the epoch boundary, from the partial last batch
        exp.loaders.train.set_epoch(epoch)
        for images, targets, indices in exp.loaders.train:
            half = images.shape[0] // 2
            got = compute_losses(exp, images, targets, epoch, indices)
            exp.optimizer.zero_grad(set_to_none=True)
            got.total.backward()
            expected, out = authors_step(reference, images[:half], targets[:half], previous)
            expected.backward()
            sizes.append((half, got.logits.shape[0]))

            torch.testing.assert_close(got.total, expected, rtol=1e-6, atol=1e-7)
            for (name, mine), theirs in zip(exp.model.named_parameters(), reference.parameters()):
                torch.testing.assert_close(
                    mine.grad,
                    theirs.grad,
                    rtol=1e-4,
                    atol=1e-6,
                    msg=lambda m, name=name: f"{name}, step {len(sizes)}: {m}",
                )
            for (name, mine), theirs in zip(bn_state(exp.model).items(), bn_state(reference).values()):
                torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7, msg=name)
            torch.testing.assert_close(exp.plan.logits, out.detach())

            previous = (images[half:], targets[half:], out)
            exp.optimizer.step()
            reference.load_state_dict(exp.model.state_dict())
            reference.zero_grad(set_to_none=True)
    # The first step had no previous batch; the partial batch taught the next epoch's first step.
    assert sizes == [(16, 16), (16, 32), (8, 24), (16, 24), (16, 32), (8, 24)]


def test_the_joint_pass_is_one_batch_whose_batchnorm_statistics_differ():
    """joint_pass forwards [B_t view 0; B_{t-1} view 1] as one batch: in train mode BatchNorm then gives
    another loss than the two passes; in eval mode (running statistics) the two steps agree."""
    for train_mode in (True, False):
        second_step = []
        for joint_pass in (False, True):
            exp = experiment(f"batch.last_batch.joint_pass={joint_pass}")  # the same seed: the same initial weights
            exp.model.train(train_mode)
            exp.loaders.train.set_epoch(1)
            with torch.no_grad():
                totals = [
                    compute_losses(exp, images, targets, 1, indices).total
                    for (images, targets, indices), _ in zip(exp.loaders.train, range(2))
                ]
            second_step.append(totals[1])
        if train_mode:
            assert abs(second_step[0] - second_step[1]) > 1e-4 * abs(second_step[0])
        else:
            torch.testing.assert_close(second_step[0], second_step[1], rtol=1e-5, atol=1e-6)


def test_the_joint_pass_composes_one_tensor_and_the_default_two_parts():
    from data.plans.last_batch import LastBatchOptions, LastBatchPlan

    images, targets = torch.arange(8.0).view(8, 1, 1, 1), torch.arange(8) % 4  # [B_t view 0; B_t view 1], B = 4
    for joint_pass in (False, True):
        plan = LastBatchPlan(LastBatchOptions(joint_pass=joint_pass))
        plan.compose(images, targets, None)
        plan.logits = torch.zeros(4, 3)
        parts, labels, _, batch = plan.compose(images + 10, targets, None)
        expected = [[10, 11, 12, 13], [4, 5, 6, 7]]  # the new view 0, then the last batch's view 1
        assert [part.flatten().tolist() for part in parts] == ([expected[0] + expected[1]] if joint_pass else expected)
        assert labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and batch.teacher_logits.shape == (4, 3)
