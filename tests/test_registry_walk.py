"""Every registered loss term, batch plan, batch transform and augmentation, walked from the registries, so that
no method can be added without being trained: every term on every backbone family (timm's included) in-process
(two steps of the batch its plan composes, the gradient reaching the first convolution, or a clean refusal by
``check_features``) and under every plan it accepts, every plan's indices alike from both loaders, and a real
one-epoch run of train.py of each term, alone and with Tf-FD."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch

from core.errors import ConfigError
from data.augmentations import AUGMENTATIONS
from data.batch_transforms import BATCH_TRANSFORMS
from data.plans import PLANS, build_plan
from data.sharding import extra_layout
from engine.config import BatchConfig
from engine.network import TrainingNetwork
from losses import LOSSES, LossTerm, TrainingSetup
from models import build_model

from conftest import REPO, SMOKE, read_metrics, run_train
from timm_models import TINY as TIMM_TINY

TERMS = sorted(LOSSES)
# Models of each stage layout: 3 and 4 stages, head blocks (a final BN-ReLU; a 1x1 conv, with odd
# widths and a 2 x 2 last stage), torchvision's ImageNet ResNet (at 64 x 64 here, for speed).
BACKBONES = {
    "resnet20": 16,
    "cifar_resnet18": 16,
    "wrn_16_2": 16,
    "mobilenetv2": 32,
    "resnet18": 64,
    # tiny timm models of three families: a ResNet, a ConvNeXt, a ViT (tests/timm_models.py)
    **{name: side for name, (side, _, _) in TIMM_TINY.items()},
}
MUST_FIT = {"resnet20", "cifar_resnet18"}  # the quickstart's and the self-KD table's backbones
NUM_CLASSES, ANCHORS = 5, 6


def _plan(name: str):
    """A batch plan with its default options."""
    return build_plan(name, BatchConfig())


def _term(name: str) -> LossTerm:
    registered = LOSSES.lookup(name)
    return registered.term(registered.config())


def _batch(plan, side: int):
    """What the loaders give a step: anchors, then the extra samples the plan draws for them."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4 * ANCHORS) % NUM_CLASSES  # the "dataset": 24 samples, every class present
    indices = torch.arange(ANCHORS)
    if plan.extra_samples:
        indices = torch.cat([indices, extra_layout(plan.draw_extra(labels, indices, generator))])
    images = torch.randn(len(indices), 3, side, side, generator=generator)
    return images, labels[indices], indices, len(labels)


@functools.lru_cache(maxsize=None)
def _model(name: str):
    """One initialised model per name and its stage shapes; each test trains a copy."""
    torch.manual_seed(0)
    side = BACKBONES[name]
    options = {"timm_kwargs": TIMM_TINY[name][1]} if name in TIMM_TINY else {}
    model = build_model(name, NUM_CLASSES, **options).train()
    with torch.no_grad():
        shapes = tuple(tuple(f.shape[1:]) for f in model(torch.zeros(2, 3, side, side))[1])
    return model, shapes


def _step(network, term, images, targets, indices, epoch):
    parts, targets, indices, batch = network.plan.compose(images, targets, indices)
    teacher_logits = None
    if term.requires_teacher:
        teacher_logits = torch.randn(len(targets), NUM_CLASSES, generator=torch.Generator().manual_seed(1))
        teacher_logits = teacher_logits.to(targets.device)
    _, losses = network(
        parts, targets, torch.tensor(float(epoch), device=targets.device), indices, teacher_logits, None, batch
    )
    return losses


def _train_two_steps(model, shapes, name: str, plan_name: str, side: int):
    """Two steps of the term ``name`` under the plan ``plan_name``: finite losses and gradients, and a gradient
    that reaches the model's first convolution."""
    term, plan = _term(name), _plan(plan_name)
    images, targets, indices, num_samples = _batch(plan, side)
    term.check_features(shapes)
    term.attach(TrainingSetup(num_samples, NUM_CLASSES, 2, shapes))
    network = TrainingNetwork(model, [term], plan)
    first_conv = next(p for p in model.parameters() if p.dim() == 4)
    for epoch in (1, 2):  # a second step: terms with memory (PS-KD) and plans with memory (DLB's) use the first
        losses = _step(network, term, images, targets, indices, epoch)
        assert losses and all(torch.isfinite(value) for value in losses.values()), losses
        network.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0, f"{name} under {plan_name} trains nothing"
    for param_name, param in network.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize("model_name", sorted(BACKBONES))
@pytest.mark.parametrize("name", TERMS)
def test_every_term_trains_on_every_backbone_family_or_refuses_it_cleanly(name, model_name):
    side = BACKBONES[model_name]
    model, shapes = _model(model_name)
    model = copy.deepcopy(model)
    torch.manual_seed(0)
    registered = LOSSES.lookup(name)
    term = registered.term(registered.config())
    refusal = getattr(model, "refuses_terms", {}).get(name)  # the model's own (engine/builder.py checks it)
    if refusal:
        assert model_name not in MUST_FIT and "\n" not in refusal, refusal
        return
    try:
        term.check_features(shapes)
    except ConfigError as error:
        assert model_name not in MUST_FIT, f"{name} refuses {model_name}: {error}"
        assert "\n" not in str(error) and f"loss.{name}" in str(error), str(error)
        return
    _train_two_steps(model, shapes, name, term.batch_plan or "plain", side)


ACCEPTED = [
    (name, plan) for name in TERMS for plan in sorted(PLANS) if LOSSES.lookup(name).term.batch_plan in (None, plan)
]  # a term that needs no plan takes any


@pytest.mark.parametrize("name, plan_name", ACCEPTED)
def test_every_term_trains_under_every_batch_plan_it_accepts(name, plan_name):
    model, shapes = _model("resnet20")
    torch.manual_seed(0)
    _train_two_steps(copy.deepcopy(model), shapes, name, plan_name, BACKBONES["resnet20"])


# ---------------------------------------------------------------- on a GPU (scripts/gpu_check.sh)
DRAWS_ON_THE_DEVICE = {"mixskd"}  # its mixup permutation: another stream on CUDA than on the CPU


def _first_step_losses(name: str, device, autocast_dtype=None) -> dict:
    """One step of the term with its defaults on cifar_resnet18, on ``device``: the same weights, batch
    and term initialisation whatever the device."""
    model, shapes = _model("cifar_resnet18")
    registered = LOSSES.lookup(name)
    torch.manual_seed(0)
    term, plan = registered.term(registered.config()), _plan(registered.term.batch_plan or "plain")
    images, targets, indices, num_samples = _batch(plan, BACKBONES["cifar_resnet18"])
    term.attach(TrainingSetup(num_samples, NUM_CLASSES, 2, shapes))
    network = TrainingNetwork(copy.deepcopy(model), [term], plan).to(device)
    with torch.autocast(
        torch.device(device).type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
    ):
        losses = _step(network, term, images.to(device), targets.to(device), indices.to(device), 1)
    return {key: value.detach().float().cpu() for key, value in losses.items()}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", TERMS)
def test_every_term_on_cuda_matches_the_cpu_in_fp32_and_is_finite_in_bf16(name):
    cpu, cuda = _first_step_losses(name, "cpu"), _first_step_losses(name, "cuda")
    assert cuda.keys() == cpu.keys()
    if name not in DRAWS_ON_THE_DEVICE:
        for key in cpu:
            torch.testing.assert_close(cuda[key], cpu[key], rtol=2e-3, atol=1e-4, msg=f"{name}: {key}")
    bf16 = _first_step_losses(name, "cuda", torch.bfloat16)
    assert bf16.keys() == cpu.keys() and all(torch.isfinite(value) for value in bf16.values()), bf16


# ---------------------------------------------------------------- real runs of train.py
WALK = [
    *SMOKE,
    "data.num_train=192",
    "data.num_test=64",
    "train.batch_size=32",
    "train.epochs=1",
    "train.log_interval=100",
    "loss.tffd.warmup_epochs=0",
]
STANDARD = {"train_loss", "train_acc1", "train_time", "train_lr", "train_images_per_s"}


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory) -> str:
    run_dir = tmp_path_factory.mktemp("teacher") / "run"
    run_train(*WALK, "loss.terms=[ce]", "--run-dir", str(run_dir), check=True)
    return str(run_dir / "best.pt")


def _walk_run(tmp_path, terms: list[str], *overrides: str, teacher: str | None = None) -> dict:
    extra = ["teacher.model=resnet20", f"teacher.checkpoint={teacher}"] if teacher else []
    run_dir = tmp_path / "run"
    run_train(*WALK, f"loss.terms=[{','.join(terms)}]", *extra, *overrides, "--run-dir", str(run_dir), check=True)
    metrics = read_metrics(run_dir)
    assert metrics["finished"] and metrics["epochs_done"] == 1
    (epoch,) = metrics["history"]
    assert math.isfinite(epoch["train_loss"]) and math.isfinite(epoch["test_acc1"])
    return epoch


@pytest.mark.parametrize("with_tffd", [False, True], ids=["alone", "with_tffd"])
@pytest.mark.parametrize("name", TERMS)
def test_every_registered_term_trains_an_epoch_alone_and_with_tffd(name, with_tffd, tmp_path, request):
    if name == "tffd" and with_tffd:
        pytest.skip("tffd with tffd is tffd alone")
    terms = [name, "tffd"] if with_tffd else [name]
    teacher = request.getfixturevalue("teacher_checkpoint") if LOSSES.lookup(name).term.requires_teacher else None
    epoch = _walk_run(tmp_path, terms, teacher=teacher)
    logged = {key for key in epoch if key.startswith("train_")} - STANDARD
    own = {key for key in logged if not key.startswith("train_tffd_")}
    assert own or name == "tffd", f"{name} logged no loss of its own: {sorted(epoch)}"
    assert all(math.isfinite(epoch[key]) for key in logged)
    assert ({"train_tffd_intra", "train_tffd_inter"} <= logged) == (with_tffd or name == "tffd")


@pytest.mark.parametrize("transform", sorted(BATCH_TRANSFORMS))
def test_every_batch_transform_trains_an_epoch_with_tffd(transform, tmp_path):
    _walk_run(tmp_path, ["ce", "tffd"], f"batch.transforms=[{transform}]")


@pytest.mark.parametrize("loader", ["device", "torchvision"])
@pytest.mark.parametrize("augmentation", sorted(AUGMENTATIONS))
def test_every_augmentation_trains_an_epoch_with_tffd_on_both_loaders(augmentation, loader, tmp_path):
    _walk_run(tmp_path, ["ce", "tffd"], f"data.augment=[{augmentation}]", f"data.loader={loader}", "data.num_workers=0")


# ---------------------------------------------------------------- the batch plans
def test_no_loss_term_makes_its_own_batch():
    """How a step's batch is made is the batch plan's alone: a term names the plan it needs (``batch_plan``) and
    reads its typed batch, and holds nothing about samplers, composition, batch transforms or per-rank state."""
    interface = {name for name in vars(LossTerm) if not name.startswith("_")}
    assert interface == {"requires_teacher", "batch_plan", "attach", "check_features", "forward"}
    forbidden = ("sampler", "compose", "refuses", "per_rank", "extras", "draw_extra", "complete", "partner")
    for name in TERMS:
        for cls in LOSSES.lookup(name).term.__mro__:
            if cls in (LossTerm, torch.nn.Module, object):
                continue
            own = [attribute for attribute in vars(cls) if any(word in attribute.lower() for word in forbidden)]
            assert not own, f"{name} ({cls.__name__}) has {own}: that belongs to a batch plan (data/plans/)"
        needed = LOSSES.lookup(name).term.batch_plan
        assert needed is None or needed in PLANS, f"{name} needs an unknown plan {needed}"


def _loader_batches(plan_name: str, loader: str):
    from data import build_dataset, build_loaders
    from engine.config import load_config

    config = load_config(
        REPO / "configs/quickstart.yaml", [*SMOKE, "data.num_train=40", f"data.loader={loader}", "data.num_workers=0"]
    )
    data = build_dataset(config.data)
    loaders = build_loaders(config.data, data, 16, 64, "cpu", 3, _plan(plan_name))
    loaders.train.set_epoch(2)
    return [(labels, indices) for _, labels, indices in loaders.train], data.train_labels


@pytest.mark.parametrize("plan_name", sorted(PLANS))
def test_every_plan_gives_both_loaders_the_same_batches_of_indices(plan_name):
    plan = _plan(plan_name)
    device, labels = _loader_batches(plan_name, "device")
    torchvision, _ = _loader_batches(plan_name, "torchvision")
    assert len(device) == len(torchvision) == 3  # 40 samples: 16 + 16 + 8 anchors
    for (device_labels, device_indices), (torch_labels, torch_indices) in zip(device, torchvision):
        assert torch.equal(device_indices, torch_indices) and torch.equal(device_labels, torch_labels)
        anchors = len(device_indices) // (plan.extra_samples + 1)
        assert torch.equal(labels[device_indices], device_labels)
        extra = device_indices[anchors:].view(plan.extra_samples, anchors)  # the anchors, then their extra samples
        if plan_name in ("class_pairs", "same_class"):
            assert (labels[extra] == labels[device_indices[:anchors]]).all()
        if plan_name in ("two_views", "last_batch"):
            assert (extra == device_indices[:anchors]).all()
    seen = torch.cat([indices[: len(indices) // (plan.extra_samples + 1)] for _, indices in device])
    assert sorted(seen.tolist()) == list(range(40))  # every sample is an anchor once an epoch


def test_terms_that_need_different_plans_are_refused_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(*WALK, "loss.terms=[ce,dlb,ddgsd]", "--run-dir", str(run_dir))
    assert result.returncode == 2 and not run_dir.exists(), result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: loss.terms need different batch plans (loss.dlb needs last_batch, loss.ddgsd needs two_views); a run "
        "has one plan: combine terms that need the same plan, or one that needs none"
    )
    result = run_train(*WALK, "loss.terms=[ce,cs_kd]", "batch.plan=two_views", "--run-dir", str(run_dir))
    assert result.returncode == 2 and not run_dir.exists(), result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: batch.plan=two_views, but loss.cs_kd needs batch plan class_pairs; set batch.plan=class_pairs (or "
        "auto), or drop cs_kd from loss.terms"
    )


def test_any_one_term_goes_with_the_plan_it_needs_and_with_terms_that_need_none():
    from engine.builder import check_terms_combine
    from engine.config import load_config

    for name in TERMS:
        terms = "[ce,tffd]" if name in ("ce", "tffd") else f"[ce,{name},tffd]"
        check_terms_combine(load_config(REPO / "configs/quickstart.yaml", [f"loss.terms={terms}"]))


@pytest.mark.parametrize("transform", ["mixup", "cutmix"])
def test_a_transform_that_would_mix_across_a_plans_pairs_is_refused_in_one_line(transform, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(
        *WALK, "loss.terms=[mixskd]", f"batch.transforms=[cutout,{transform}]", "--run-dir", str(run_dir)
    )
    assert result.returncode == 2 and not run_dir.exists(), result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: batch plan mix_pairs (loss.mixskd needs it) pairs the images of its batch, and batch.transforms "
        f"['{transform}'] would mix across its pairs; remove {transform} from batch.transforms"
    )
    result = run_train(*WALK, "batch.plan=mix_pairs", f"batch.transforms=[{transform}]", "--run-dir", str(run_dir))
    assert result.returncode == 2 and not run_dir.exists(), result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: batch plan mix_pairs pairs the images")
