"""Stage taps (losses/tffd_taps.py): the Tf-FD work done as each stage finishes gives the same loss
values, bit for bit, and the same gradients as the term doing it after the forward pass."""
import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, SMOKE
from engine.builder import build_experiment
from engine.config import load_config
from engine.distributed import DistContext
from losses import StepOutput
from losses.tffd import TeacherFreeFD, TfFDConfig
from losses.tffd_fused import FeaturePlan, feature_work
from models import build_model, stage_modules

STAGED = ["resnet20", "wrn_16_2", "shufflenetv1", "shufflenetv2", "mobilenetv1"]


def test_the_network_gradient_is_added_in_the_same_pass(backend):
    """Behind a tap, the feature's gradient is the network's plus the Tf-FD one, rounded as autograd
    would add the two."""
    generator = torch.Generator().manual_seed(11)
    feature = torch.randn(3, 7, 16, 16, generator=generator).relu()
    deeper = [torch.randn(3, 5, 8, 8, generator=generator), torch.randn(3, 9, 4, 4, generator=generator)]
    network_grad = torch.randn(feature.shape, generator=generator)
    plan = FeaturePlan.of(feature.shape, True, False, [d.shape for d in deeper])

    def gradient(with_network: bool):
        leaf = feature.clone().requires_grad_(True)
        outputs = feature_work(leaf, plan)
        total = sum(w * loss for w, loss in zip((0.3, 0.5, 0.2), plan.losses(outputs, deeper)))
        if with_network:
            total = total + (outputs[0] * network_grad).sum()  # sends network_grad into the view
        return torch.autograd.grad(total, leaf)[0]

    assert torch.equal(gradient(True), network_grad + gradient(False))


def train_steps(model, term, batches, targets):
    """One forward and backward per batch: the term's values and the total, and all parameter gradients."""
    values, grads = [], []
    for images in batches:
        model.zero_grad(set_to_none=True)
        logits, feats = model(images)
        out = term(StepOutput(logits, feats, targets[: len(images)], 5))
        total = F.cross_entropy(logits, targets[: len(images)]) + sum(out.values())
        total.backward()
        values.append({name: value.detach() for name, value in {**out, "total": total}.items()})
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return values, grads


def tap(model, term, image_size=32):
    """Tap ``model``'s stages for ``term``, as the builder does."""
    model.eval()
    with torch.no_grad():
        _, feats = model(torch.zeros(1, 3, image_size, image_size))
    model.train()
    term.tap_stages(stage_modules(model), [tuple(feature.shape[1:]) for feature in feats])
    return len(feats)


@pytest.mark.parametrize("name", STAGED)
def test_tapped_steps_equal_untapped_steps(name, backend):
    """Taps work from the first step and for a smaller last batch; images of another size are not
    what the taps were planned for, so the term does the work itself."""
    torch.manual_seed(0)
    plain_model = build_model(name, num_classes=10).train()
    tapped_model = copy.deepcopy(plain_model)
    config = TfFDConfig(lambda_intra=1.0, lambda_inter=1.0, warmup_epochs=0)
    plain_term, tapped_term = TeacherFreeFD(config), TeacherFreeFD(config)
    stages = tap(tapped_model, tapped_term)
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 32, 32, generator=generator), torch.randn(3, 3, 32, 32, generator=generator),
               torch.randn(4, 3, 64, 64, generator=generator)]
    targets = torch.randint(0, 10, (4,), generator=generator)

    plain_values, plain_grads = train_steps(plain_model, plain_term, batches, targets)
    uses = []
    for step in range(3):
        tapped_values, tapped_grads = train_steps(tapped_model, tapped_term, [batches[step]], targets)
        uses.append(tapped_term.taps.uses)
        for key, value in plain_values[step].items():
            assert torch.equal(tapped_values[0][key], value), (step, key)
        # Only the order in which a feature's gradients are added differs, so tiny differences, which
        # BatchNorm's backward can make large relative to a gradient that is zero but for rounding.
        scale = plain_grads[step].abs().max().item()
        torch.testing.assert_close(tapped_grads[0], plain_grads[step], rtol=0, atol=1e-5 * scale)
    assert uses == [stages, 2 * stages, 2 * stages]


def test_models_that_form_features_otherwise_have_no_stage_modules():
    assert len(stage_modules(build_model("resnet20", num_classes=10))) == 3
    assert stage_modules(build_model("vgg8", num_classes=10)) == []
    assert stage_modules(build_model("mobilenetv2", num_classes=10)) == []


def test_taps_do_nothing_without_autograd():
    model = build_model("resnet20", num_classes=10).train()
    term = TeacherFreeFD(TfFDConfig())
    tap(model, term, image_size=16)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        _, feats = model(images)
    assert term.taps.tapped == {} and all(f.grad_fn is None for f in feats)
    _, feats = model(images)  # with autograd: tapped
    assert sorted(term.taps.tapped) == [0, 1, 2] and all(term.taps.tapped[i][0] is f for i, f in enumerate(feats))
    term.taps.remove()
    _, feats = model(images)
    assert term.taps.tapped == {} and "FeatureWork" not in type(feats[0].grad_fn).__name__


def test_only_the_stages_the_term_uses_are_tapped():
    model = build_model("resnet20", num_classes=10)
    term = TeacherFreeFD(TfFDConfig(stages=[2, 3], lambda_inter=0.0))
    tap(model, term)
    assert sorted(term.taps.plans) == [1, 2] and len(term.taps.handles) == 2
    plain = TeacherFreeFD(TfFDConfig(stages=[2, 3], lambda_inter=0.0))
    images, targets = torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
    tapped_values, _ = train_steps(model, term, [images], targets)
    plain_values, _ = train_steps(model, plain, [images], targets)
    assert term.taps.uses == 2 and torch.equal(tapped_values[0]["tffd_intra"], plain_values[0]["tffd_intra"])


@pytest.mark.parametrize("compile_, tapped", [(False, 3), (True, 0)])
def test_the_builder_taps_stages_except_under_compile(compile_, tapped):
    config = load_config(REPO / "configs/quickstart.yaml",
                         [*SMOKE, "model.name=resnet20", f"train.compile={str(compile_).lower()}"])
    exp = build_experiment(config, DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    (term,) = [term for term in exp.terms if isinstance(term, TeacherFreeFD)]
    assert len(term.taps.handles) == tapped and exp.tapped_stages == tapped
