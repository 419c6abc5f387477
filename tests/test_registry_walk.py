"""Every registered loss term, batch transform and augmentation, walked from the registries, so that no method can be
added without being trained: on every backbone family (timm's included) in-process (two steps, the term's own batch
composition, the gradient reaching the first convolution, or a clean refusal by ``check_features``),
and as a real one-epoch run of train.py, alone and with Tf-FD."""
from __future__ import annotations

import copy
import functools
import math

import pytest
import torch

from conftest import REPO, SMOKE, read_metrics, run_train
from core.errors import ConfigError
from data.augmentations import AUGMENTATIONS
from data.batch_transforms import BATCH_TRANSFORMS
from engine.builder import sampler_of
from engine.network import TrainingNetwork
from losses import LOSSES, LossTerm, TrainingSetup
from models import build_model
from timm_models import TINY as TIMM_TINY

TERMS = sorted(LOSSES)
# Models of each stage layout: 3 and 4 stages, head blocks (a final BN-ReLU; a 1x1 conv, with odd
# widths and a 2 x 2 last stage), torchvision's ImageNet ResNet (at 64 x 64 here, for speed).
BACKBONES = {"resnet20": 16, "cifar_resnet18": 16, "wrn_16_2": 16, "mobilenetv2": 32, "resnet18": 64,
             # tiny timm models of three families: a ResNet, a ConvNeXt, a ViT (tests/timm_models.py)
             **{name: side for name, (side, _, _) in TIMM_TINY.items()}}
MUST_FIT = {"resnet20", "cifar_resnet18"}  # the quickstart's and the self-KD table's backbones
NUM_CLASSES, ANCHORS = 5, 6


def _batch(term, side: int):
    """What the loaders give a step: anchors, then each anchor's partners if the term names a sampler."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4 * ANCHORS) % NUM_CLASSES  # the "dataset": 24 samples, every class present
    indices = torch.arange(ANCHORS)
    sampler = sampler_of([term], ["term"])
    if sampler is not None:
        partners = sampler(labels, 0, 1, 0, 1)[:ANCHORS]  # count x M
        indices = torch.cat([indices, partners.T.reshape(-1)])
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
    images, targets, indices, extras = term.compose_batch(images, targets, indices)
    parts = images if isinstance(images, tuple) else (images,)  # DLB's two passes
    teacher_logits = None
    if term.requires_teacher:
        teacher_logits = torch.randn(len(targets), NUM_CLASSES, generator=torch.Generator().manual_seed(1))
        teacher_logits = teacher_logits.to(targets.device)
    _, losses = network(parts, targets, torch.tensor(float(epoch), device=targets.device), indices, teacher_logits,
                        None, extras)
    return losses


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
    images, targets, indices, num_samples = _batch(term, side)
    term.attach(TrainingSetup(num_samples, NUM_CLASSES, 2, shapes))
    network = TrainingNetwork(model, [term])
    first_conv = next(p for p in model.parameters() if p.dim() == 4)
    for epoch in (1, 2):  # a second step: terms with memory (DLB, PS-KD) distil from the first
        losses = _step(network, term, images, targets, indices, epoch)
        assert losses and all(torch.isfinite(value) for value in losses.values()), losses
        total = sum(losses.values())
        network.zero_grad(set_to_none=True)
        total.backward()
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0, f"{name} trains nothing on {model_name}"
    for param_name, param in network.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), param_name


# ---------------------------------------------------------------- on a GPU (scripts/gpu_check.sh)
DRAWS_ON_THE_DEVICE = {"mixskd"}  # its mixup permutation: another stream on CUDA than on the CPU


def _first_step_losses(name: str, device, autocast_dtype=None) -> dict:
    """One step of the term with its defaults on cifar_resnet18, on ``device``: the same weights, batch
    and term initialisation whatever the device."""
    model, shapes = _model("cifar_resnet18")
    registered = LOSSES.lookup(name)
    torch.manual_seed(0)
    term = registered.term(registered.config())
    images, targets, indices, num_samples = _batch(term, BACKBONES["cifar_resnet18"])
    term.attach(TrainingSetup(num_samples, NUM_CLASSES, 2, shapes))
    network = TrainingNetwork(copy.deepcopy(model), [term]).to(device)
    with torch.autocast(torch.device(device).type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
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
WALK = [*SMOKE, "data.num_train=192", "data.num_test=64", "train.batch_size=32", "train.epochs=1",
        "train.log_interval=100", "loss.tffd.warmup_epochs=0"]
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
    _walk_run(tmp_path, ["ce", "tffd"], f"data.augment=[{augmentation}]", f"data.loader={loader}",
              "data.num_workers=0")


def test_two_terms_that_compose_the_batch_are_refused_before_anything_runs():
    from engine.config import load_config
    from losses import build_loss_terms

    config = load_config(REPO / "configs/quickstart.yaml", ["loss.terms=[ce,dlb,ddgsd]"])
    terms = build_loss_terms(config.loss.terms, config.loss)
    with pytest.raises(ConfigError, match="dlb and ddgsd each compose the training batch"):
        sampler_of(terms, config.loss.terms)
    defaults = {name: LOSSES.lookup(name).term(LOSSES.lookup(name).config()) for name in TERMS}
    composing = [name for name, term in defaults.items()
                 if term.sampler or type(term).compose_batch is not LossTerm.compose_batch]
    assert {"cs_kd", "dlb", "ddgsd", "bake"} <= set(composing)
    for name in TERMS:  # any one of them alone, or beside terms that take the batch as it comes, is fine
        config = load_config(REPO / "configs/quickstart.yaml", [f"loss.terms=[ce,{name},tffd]"] if name not in
                             ("ce", "tffd") else [])
        sampler_of(build_loss_terms(config.loss.terms, config.loss), config.loss.terms)


@pytest.mark.parametrize("transform", ["mixup", "cutmix"])
def test_a_transform_that_would_mix_across_a_terms_own_mixed_batch_is_refused_in_one_line(transform, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(*WALK, "loss.terms=[mixskd]", f"batch.transforms=[cutout,{transform}]", "--run-dir",
                       str(run_dir))
    assert result.returncode == 2 and not run_dir.exists(), result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: loss.mixskd mixes its own batch, and batch.transforms ['{transform}'] would mix across it and break "
        f"its pairs; remove {transform} from batch.transforms")
