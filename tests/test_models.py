"""Every registered backbone against its published size: parameter count, stage shapes, a Tf-FD training
step; the ImageNet wrappers against plain torchvision; initial weights from a file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from core.errors import CheckpointError
from engine.checkpoint import load_model_weights
from engine.config import load_config
from losses import StepOutput, build_loss_terms
from losses.tffd import TeacherFreeFD, TfFDConfig
from models import MODELS, build_configured_model, build_model

from conftest import REPO, run_train

CIFAR, IMAGENET = (100, 32), (1000, 224)  # (classes, input side) of the figures below
_RESNET = [(16, 32), (32, 16), (64, 8)]
_RESNET_X4 = [(64, 32), (128, 16), (256, 8)]
_IMAGENET_RESNET = [(64, 56), (128, 28), (256, 14), (512, 7)]

# name: (dataset, parameters in millions, stage features as (channels, side)), from the CIFAR-100 KD benchmark's
# model zoo
EXPECTED = {
    "resnet20": (CIFAR, 0.28, _RESNET),
    "resnet32": (CIFAR, 0.47, _RESNET),
    "resnet56": (CIFAR, 0.86, _RESNET),
    "resnet110": (CIFAR, 1.74, _RESNET),
    "resnet8x4": (CIFAR, 1.23, _RESNET_X4),
    "resnet32x4": (CIFAR, 7.43, _RESNET_X4),
    "wrn_16_2": (CIFAR, 0.70, [(32, 32), (64, 16), (128, 8)]),
    "wrn_40_1": (CIFAR, 0.57, [(16, 32), (32, 16), (64, 8)]),
    "wrn_40_2": (CIFAR, 2.26, [(32, 32), (64, 16), (128, 8)]),
    "vgg8": (CIFAR, 3.97, [(64, 32), (128, 16), (256, 8), (512, 4)]),
    "vgg13": (CIFAR, 9.46, [(64, 32), (128, 16), (256, 8), (512, 4)]),
    "mobilenetv2": (CIFAR, 0.81, [(12, 16), (16, 8), (48, 4), (160, 2)]),
    "shufflenetv1": (CIFAR, 0.95, [(240, 16), (480, 8), (960, 4)]),
    "shufflenetv2": (CIFAR, 1.36, [(116, 16), (232, 8), (464, 4)]),
    "resnet18": (IMAGENET, 11.69, _IMAGENET_RESNET),
    "resnet34": (IMAGENET, 21.80, _IMAGENET_RESNET),
    "resnet50": (IMAGENET, 25.56, [(4 * c, s) for c, s in _IMAGENET_RESNET]),
    "mobilenetv1": (IMAGENET, 4.23, [(256, 28), (512, 14), (1024, 7)]),
    "mobilenetv2_imagenet": (IMAGENET, 3.50, [(32, 28), (96, 14), (320, 7)]),
    # the self-distillation literature's CIFAR ResNet-18s (exact counts below)
    "cifar_resnet18": (CIFAR, 11.22, [(64, 32), (128, 16), (256, 8), (512, 4)]),
    "preact_resnet18": (CIFAR, 11.22, [(64, 32), (128, 16), (256, 8), (512, 4)]),
}
EXACT_PARAMETERS = {"cifar_resnet18": 11_220_132, "preact_resnet18": 11_217_444}
TORCHVISION = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "mobilenetv2_imagenet": "mobilenet_v2",
}
TRAIN_STEP_SIDE = {CIFAR: 32, IMAGENET: 64}  # ImageNet models train at 64x64 here, for speed


def test_every_registered_model_is_checked():
    assert sorted(MODELS) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameters_and_stage_shapes_match_the_published_sizes(name):
    (num_classes, side), millions, stages = EXPECTED[name]
    torch.manual_seed(0)
    model = build_model(name, num_classes).eval()
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - millions * 1e6) <= 0.01 * millions * 1e6, f"{name}: {count} parameters"
    assert count == EXACT_PARAMETERS.get(name, count), f"{name}: {count} parameters"
    with torch.no_grad():
        logits, feats = model(torch.randn(1, 3, side, side))
    assert logits.shape == (1, num_classes)
    assert [tuple(f.shape) for f in feats] == [(1, c, s, s) for c, s in stages]


HEAD_BLOCK = {"wrn_16_2", "wrn_40_1", "wrn_40_2", "mobilenetv2", "shufflenetv2", "mobilenetv2_imagenet"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_is_the_head_map_classified_and_the_head_map_feeds_the_classifier(name):
    """The trainer calls ``forward_maps`` and ``classify_map`` (engine/network.py); evaluation calls
    ``forward``: they must be the same function. The head map is the last stage's output unless a
    head block (a final BN-ReLU, a 1x1 conv) comes before pooling."""
    (num_classes, side), _, _ = EXPECTED[name]
    torch.manual_seed(0)
    model = build_model(name, num_classes).eval()
    images = torch.randn(2, 3, side, side)
    with torch.no_grad():
        logits, feats = model(images)
        split_feats, head_map = model.forward_maps(images)
        split_logits = model.classify_map(head_map)
    torch.testing.assert_close(split_logits, logits, rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(split_feats, feats))
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert head_map.shape[1] == linear.in_features
    assert torch.equal(head_map, feats[-1]) == (name not in HEAD_BLOCK)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tffd_training_step_is_finite_and_reaches_the_parameters(name):
    (num_classes, _), _, stages = EXPECTED[name]
    side = TRAIN_STEP_SIDE[EXPECTED[name][0]]
    torch.manual_seed(0)
    model = build_model(name, num_classes).train()
    tffd = TeacherFreeFD(TfFDConfig(lambda_intra=1.0, lambda_inter=1.0, warmup_epochs=0))
    images, targets = torch.randn(2, 3, side, side), torch.randint(num_classes, (2,))
    logits, feats = model(images)
    assert len(feats) == len(stages)
    terms = tffd(StepOutput(logits, feats, targets, epoch=1))
    assert sorted(terms) == ["tffd_inter", "tffd_intra"]
    assert all(torch.isfinite(value) and value > 0 for value in terms.values())

    # Tf-FD alone reaches the first convolution, which feeds every stage.
    first_conv = next(model.parameters())
    (tffd_grad,) = torch.autograd.grad(sum(terms.values()), first_conv, retain_graph=True)
    assert tffd_grad.abs().sum() > 0

    loss = F.cross_entropy(logits, targets) + sum(terms.values())
    assert torch.isfinite(loss)
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_imagenet_wrapper_loads_torchvision_weights_and_gives_its_logits(name, tmp_path):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, TORCHVISION[name])(weights=None, num_classes=10).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a skipped or misplaced BN would show
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    weights = tmp_path / "torchvision.pth"
    torch.save(reference.state_dict(), weights)
    wrapper = build_model(name, 10)
    load_model_weights(wrapper, weights, what="model.weights")  # strict: the keys are torchvision's
    wrapper.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, feats = wrapper(images)
        expected = reference(images)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert len(feats) == len(EXPECTED[name][2])


def test_mismatched_weights_file_names_the_problem(tmp_path):
    path = tmp_path / "resnet20.pt"
    torch.save(build_model("resnet20", 100).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"does not fit the model: missing keys stages\.0\.3\.") as caught:
        load_model_weights(build_model("resnet32", 100), path, what="model.weights")
    assert str(path) in str(caught.value)
    with pytest.raises(
        CheckpointError, match=r"shape mismatches \(file vs model\) fc\.weight \(100, 64\) vs \(10, 64\)"
    ):
        load_model_weights(build_model("resnet20", 10), path, what="model.weights")


def test_train_with_mismatched_weights_exits_2_and_writes_nothing(tmp_path):
    path = tmp_path / "vgg8.pt"
    torch.save(build_model("vgg8", 10).state_dict(), path)
    run_dir = tmp_path / "run"
    result = run_train(
        "data.name=synthetic",
        "data.num_train=64",
        "data.num_test=64",
        "data.image_size=16",
        "model.name=wrn_16_2",
        f"model.weights={path}",
        "--run-dir",
        str(run_dir),
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"model.weights {path} does not fit the model" in lines[0], result.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml") if "_base_" not in p.parts)
)
def test_shipped_configs_fit_their_model(path):
    """Every experiment config names a registered model (or a timm one, which is built) whose stages its loss
    terms can use."""
    config = load_config(REPO / path)
    if config.model.name.startswith("timm/"):
        (num_classes, side) = IMAGENET if config.data.name == "imagenet" else CIFAR
        with torch.no_grad():
            feats = build_configured_model(config.model, num_classes).eval()(torch.zeros(1, 3, side, side))[1]
        shapes = [tuple(f.shape[1:]) for f in feats]
    else:
        assert config.model.name in EXPECTED
        shapes = [(channels, side, side) for channels, side in EXPECTED[config.model.name][2]]
    for term in build_loss_terms(config.loss.terms, config.loss):
        term.check_features(shapes)


def test_imagenet_tffd_configs_use_the_28_14_7_stages():
    for model, prefix in (
        ("resnet18", "resnet18"),
        ("resnet50", "resnet50"),
        ("mobilenetv1", "mobilenetv1"),
        ("mobilenetv2_imagenet", "mobilenetv2"),
    ):
        config = load_config(Path(REPO, "configs/imagenet", f"{prefix}_tffd.yaml"))
        assert config.model.name == model
        stages = EXPECTED[model][2]
        used = config.loss.tffd.stages or range(1, len(stages) + 1)
        assert [stages[k - 1][1] for k in used] == [28, 14, 7], model


def test_preact_resnet18_identity_shortcut_adds_the_preactivated_input():
    """The quirk of the CS-KD / PS-KD network: out + relu(bn1(x)), not out + x."""
    from models.wrn import PreActBlock

    block = PreActBlock(4, 4, 1, identity_on_activated=True).eval()
    torch.nn.init.zeros_(block.conv2.weight)  # the residual branch adds nothing
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(block.bn1(x)))
