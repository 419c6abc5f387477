"""docs/ADDING_A_METHOD.md's worked example (docs/examples/class_consistency.py): the doc shows the file as it is,
its loss by hand (values, and what is detached), its plan's partners on both loaders' indices, and a real run of
train.py with it, alone and with Tf-FD."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from data.plans import PLANS
from data.sharding import epoch_indices
from losses import LOSSES, StepOutput
from losses.kd import kd_loss

from conftest import REPO, SMOKE, read_metrics, train_env

EXAMPLE = REPO / "docs" / "examples" / "class_consistency.py"


@pytest.fixture(scope="module")
def example():
    """The example's module, its plan and term registered while the tests run (then unregistered: the other tests
    walk the registries)."""
    spec = importlib.util.spec_from_file_location("class_consistency_example", EXAMPLE)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del PLANS["joint_class_pairs"], LOSSES["class_consistency"], sys.modules[spec.name]


def test_the_doc_shows_the_example_file_as_it_is():
    doc = (REPO / "docs" / "ADDING_A_METHOD.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in doc
    assert len(EXAMPLE.read_text().splitlines()) < 100


def test_the_loss_is_both_distillations_each_from_the_detached_other(example):
    anchors = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]], requires_grad=True)
    partners = torch.tensor([[0.0, 2.0, 0.0], [0.5, 0.0, 0.5]], requires_grad=True)
    value = example.class_consistency_loss(anchors, partners, 2.0)
    p_a, p_b = (z.detach().div(2.0).softmax(1) for z in (anchors, partners))
    by_hand = 4.0 * ((p_b * (p_b.log() - p_a.log())).sum(1).mean() + (p_a * (p_a.log() - p_b.log())).sum(1).mean())
    torch.testing.assert_close(value, by_hand)
    (grad_anchors,) = torch.autograd.grad(value, anchors, retain_graph=True)
    (only_student,) = torch.autograd.grad(kd_loss(anchors, partners, 2.0), anchors)
    torch.testing.assert_close(grad_anchors, only_student)  # the anchors get no gradient as the partners' teacher
    term = example.ClassConsistency(example.ClassConsistencyConfig(weight=0.5, temperature=2.0))
    logits = torch.cat([anchors, partners]).detach()
    out = term(StepOutput(logits, [], torch.zeros(4, dtype=torch.long), 1, batch=example.JointClassPairs()))
    torch.testing.assert_close(out["class_consistency"], 0.5 * by_hand)


def test_the_plan_adds_a_same_class_partner_to_each_anchor_in_one_pass(example):
    plan = example.JointClassPairsPlan()
    labels = torch.arange(20) % 4
    indices = epoch_indices(labels, 0, 1, 0, 1, plan)
    assert indices.extra.shape == (20, 1) and torch.equal(labels[indices.extra[:, 0]], labels[indices.anchors])
    images, targets = torch.randn(6, 3, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    parts, kept, _, batch = plan.compose(images, targets, None)
    assert len(parts) == 1 and parts[0] is images and kept is targets
    assert [half.tolist() for half in batch.halves(targets)] == [[0, 1, 2], [0, 1, 2]]


@pytest.mark.parametrize("terms", ["ce,class_consistency", "ce,class_consistency,tffd"])
def test_train_py_trains_the_example(terms, tmp_path):
    """A fresh interpreter: the example registers its plan and term before the config schema is built, as an
    import in losses/__init__.py and data/plans/__init__.py does in a fork."""
    run_dir = tmp_path / "run"
    argv = [
        "--config",
        str(REPO / "configs/quickstart.yaml"),
        *SMOKE,
        "train.epochs=1",
        f"loss.terms=[{terms}]",
        "--run-dir",
        str(run_dir),
    ]
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('class_consistency', {str(EXAMPLE)!r})\n"
        "module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "import train\n"
        f"sys.exit(train.main({json.dumps(argv)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (epoch,) = read_metrics(run_dir)["history"]
    assert epoch["train_class_consistency"] > 0 and epoch["test_acc1"] > 0
    assert read_metrics(run_dir)["finished"]
