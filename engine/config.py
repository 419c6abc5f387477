"""The experiment schema: every config key, its type, default and meaning.

``python train.py --help-config`` prints this table. The ``loss`` section is assembled from the
registered loss terms, so a new term brings its own documented options; the ``batch`` section likewise
from the batch transforms and the batch plans.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from core.errors import ConfigError, shown
from core.typed_config import Options, apply_overrides, build, describe, flatten, option
from core.yaml_files import load_yaml_tree
from data.augmentations import AUGMENTATIONS, check_augment_names
from data.batch_transforms import BATCH_TRANSFORMS
from data.plans import AUTO, PLANS, plans_with_options
from losses.registry import LOSSES
from models.timm_backbone import check_options as check_timm_options


@dataclass
class ModelConfig(Options):
    name: str = option("resnet20", "backbone name (see models.MODELS), or timm/<architecture> for any timm model")
    weights: Optional[str] = option(
        None,
        "local file of initial weights (a state_dict, a run's checkpoint, or a "
        "timm .pth/.safetensors file); never downloaded",
    )
    weights_skip: list[str] = option(
        [],
        "state_dict key prefixes of model.weights left at their initialisation, "
        "e.g. [head] (timm ViT) or [fc]: fine-tuning to another number of classes",
    )
    sync_bn: bool = option(False, "convert BatchNorm to SyncBatchNorm under DDP")
    timm_kwargs: dict[str, object] = option(
        {},
        "timm models: keyword arguments of timm.create_model, e.g. {img_size: 32, patch_size: 4, drop_path_rate: 0.1}",
    )
    timm_stages: list[int] = option(
        [],
        "timm models: the forward_intermediates indices taken as stages; [] = "
        "its own stages (feature_info less the stem), for a ViT 4 evenly spaced blocks",
        min=0,
        max=1000,
    )

    def __post_init__(self):
        super().__post_init__()
        check_timm_options(self.name, self.weights, self.timm_kwargs, self.timm_stages)
        if self.weights_skip and not self.weights:
            raise ConfigError("model.weights_skip applies to the weights of model.weights, and none is given")


@dataclass
class _DataOptions(Options):
    name: str = option("cifar100", "dataset (see data.DATASETS)")
    root: str = option("data", "directory holding (or receiving) the dataset")
    download: bool = option(False, "download through torchvision if missing (needs a network)")
    loader: str = option(
        "auto",
        "device: uint8 data on the device, batched augmentation; torchvision: Dataset + DataLoader "
        "workers; auto: device for in-memory datasets",
        choices=("auto", "device", "torchvision"),
    )
    skip_bad_images: bool = option(
        False,
        "imagefolder/imagenet: skip (and count in the log) image files that "
        "cannot be decoded, instead of stopping with the first one's name",
    )
    num_workers: int = option(4, "DataLoader worker processes (torchvision loader)", min=0, max=256)
    padding: int = option(4, "random-crop padding in pixels (0 disables the crop)", min=0, max=1024)
    pad_mode: str = option(
        "constant", "random-crop padding: constant (zeros) or reflect", choices=("constant", "reflect")
    )
    hflip: bool = option(True, "random horizontal flip")
    image_size: int = option(32, "image side for synthetic / digits / imagefolder data", min=1, max=1024)
    crop: str = option(
        "pad",
        "imagefolder training crop: pad (resize to image_size, pad by `padding`, random crop; small "
        "CIFAR-like images) or resized (random-resized crop, eval resize + center crop; large ImageNet-like images)",
        choices=("pad", "resized"),
    )
    num_classes: int = option(10, "number of classes of the synthetic dataset", min=2, max=100_000)
    num_train: int = option(5000, "training images of the synthetic dataset", min=1, max=10_000_000)
    num_test: int = option(1000, "test images of the synthetic dataset", min=1, max=10_000_000)
    mean: Optional[list[float]] = option(
        None, "normalisation mean per channel, in [0, 1] pixel units; null = the dataset's own", min=0, max=1
    )
    std: Optional[list[float]] = option(None, "normalisation std per channel; null = the dataset's own", above=0, max=1)
    augment: list[str] = option(
        [],
        "per-image training augmentations after crop and flip, in order (those on uint8 "
        "pixels, as autoaugment, before those on normalised ones, as random_erase), each "
        "with its options in data.<name>: " + ", ".join(sorted(AUGMENTATIONS)),
    )

    def __post_init__(self):
        super().__post_init__()
        check_augment_names(self.augment)


def with_sections(name: str, base: type, sections: dict[str, type], fields: tuple = ()) -> type:
    """A config section class: ``base``'s options, ``fields`` (name, type, option), and one sub-section per
    registered part (``sections``: its name -> its options dataclass), in name order."""
    parts = [(key, config, dataclasses.field(default_factory=config)) for key, config in sorted(sections.items())]
    return dataclasses.make_dataclass(name, [*fields, *parts], bases=(base,))


def _data_schema() -> type:
    """The data section: its own options, and one section ``data.<name>`` per augmentation (data/augmentations.py)."""
    return with_sections("DataConfig", _DataOptions, {name: config for name, (_, config, _) in AUGMENTATIONS.items()})


DataConfig = _data_schema()


@dataclass
class TrainConfig(Options):
    epochs: int = option(240, "training epochs", min=1, max=100_000)
    batch_size: int = option(128, "global batch size, split evenly across DDP ranks", min=1, max=65_536)
    eval_batch_size: int = option(512, "global evaluation batch size", min=1, max=65_536)
    lr: float = option(0.1, "base learning rate", min=0, max=100)
    lr_scaling: str = option(
        "none",
        "none: lr as given whatever the number of ranks; linear: lr * batch_size / lr_base_batch_size",
        choices=("none", "linear"),
    )
    lr_base_batch_size: int = option(128, "reference batch size of linear lr scaling", min=1, max=65_536)
    optimizer: str = option(
        "sgd", "sgd (momentum, nesterov) or adamw (betas); engine/optim.py", choices=("sgd", "adamw")
    )
    momentum: float = option(0.9, "SGD momentum", min=0, below=1)
    nesterov: bool = option(True, "Nesterov momentum")
    betas: list[float] = option([0.9, 0.999], "AdamW's beta1, beta2", min=0, below=1)
    weight_decay: float = option(5e-4, "weight decay", min=0, max=1)
    weight_decay_norms: bool = option(
        True,
        "weight decay on every parameter; false: none on norm weights, biases "
        "and a model's no_weight_decay() parameters (timm's filter_bias_and_bn, DeiT)",
    )
    grad_clip: float = option(0.0, "clip the global gradient norm to this; 0 = no clipping", min=0, max=1e6)
    schedule: str = option(
        "step",
        "lr schedule after the warm-up: step (milestones, gamma) or cosine (per step, to lr_min at the last step)",
        choices=("step", "cosine"),
    )
    lr_min: float = option(0.0, "cosine schedule: the final lr", min=0, max=100)
    milestones: list[int] = option(
        [150, 180, 210], "epochs after which the lr is multiplied by gamma (increasing)", min=1, max=100_000
    )
    gamma: float = option(0.1, "lr decay factor at each milestone", above=0, max=1)
    lr_warmup_epochs: int = option(
        0,
        "linear lr warm-up, per step, over this many epochs (Self-KD-Lib: 5); "
        "milestones count from the start of training",
        min=0,
        max=100_000,
    )
    amp: str = option(
        "none",
        "mixed precision: none, bf16 (autocast) or fp16 (autocast + grad scaler)",
        choices=("none", "bf16", "fp16"),
    )
    channels_last: bool = option(False, "channels_last memory format (faster convolutions on GPUs)")
    compile: bool = option(False, "torch.compile the whole step: the model, the teacher and every loss term")
    device: str = option("auto", "auto (cuda if available), cpu or cuda", choices=("auto", "cpu", "cuda"))
    deterministic: bool = option(False, "deterministic algorithms, for bit-exact reruns and resumes")
    log_interval: int = option(
        50, "steps between train-curve points (metrics are read from the device then)", min=1, max=10_000_000
    )
    nonfinite: str = option(
        "stop",
        "a NaN/Inf loss: stop (keep the last good checkpoint) or skip the step (costs a sync per step)",
        choices=("stop", "skip"),
    )

    def __post_init__(self):
        super().__post_init__()
        if len(self.betas) != 2:
            raise ConfigError(f"train.betas must be two numbers (beta1, beta2), got {shown(self.betas)}")
        if self.milestones != sorted(set(self.milestones)):
            raise ConfigError(f"train.milestones must be increasing, got {shown(self.milestones)}")


@dataclass
class TeacherConfig(Options):
    model: Optional[str] = option(None, "teacher backbone; required by terms that use a teacher (kd)")
    checkpoint: Optional[str] = option(None, "teacher weights: a run's best.pt/last.pt or a state_dict file")


def _loss_schema() -> type:
    terms = ("terms", list[str], option(["ce"], "active loss terms, summed: " + ", ".join(sorted(LOSSES))))
    return with_sections("LossConfig", Options, {name: entry.config for name, entry in LOSSES.items()}, (terms,))


LossConfig = _loss_schema()


def _batch_schema() -> type:
    fields = [
        (
            "plan",
            str,
            option(
                AUTO,
                "how each step makes its batch (data/plans/); auto: the plan the loss terms need, else plain",
                choices=(AUTO, *sorted(PLANS)),
            ),
        ),
        (
            "transforms",
            list[str],
            option(
                [],
                "batch transforms applied on the device before the forward "
                "pass, in order: " + ", ".join(sorted(BATCH_TRANSFORMS)),
            ),
        ),
    ]
    sections = {name: config for name, (_, config) in BATCH_TRANSFORMS.items()}
    clash = sections.keys() & plans_with_options().keys()
    assert not clash, f"a batch plan and a batch transform share the names {sorted(clash)}"
    return with_sections("BatchConfig", Options, {**sections, **plans_with_options()}, tuple(fields))


BatchConfig = _batch_schema()


@dataclass
class ExperimentConfig(Options):
    seed: int = option(0, "random seed (model init, data order, augmentation)", min=0, max=2**63 - 1)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    batch: BatchConfig = dataclasses.field(default_factory=BatchConfig)
    teacher: TeacherConfig = dataclasses.field(default_factory=TeacherConfig)


# Options that moved from a loss term to the batch plan that now makes its batch: old key -> new key.
MOVED_KEYS = {
    "loss.bake.partners": "batch.same_class.partners",
    "loss.dlb.joint_pass": "batch.last_batch.joint_pass",
    "loss.mixskd.alpha": "batch.mix_pairs.alpha",
}


def load_config(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment (with ``_base_`` files), apply ``KEY=VALUE`` overrides, check everything."""
    data = load_yaml_tree(Path(path))
    keys = [*flatten(data), *(override.partition("=")[0].strip() for override in overrides)]
    moved = next((key for key in keys if key in MOVED_KEYS), None)
    if moved is not None:
        raise ConfigError(
            f"{moved} is now {MOVED_KEYS[moved]} (an option of the batch plan); write {MOVED_KEYS[moved]} instead"
        )
    data = apply_overrides(data, list(overrides), ExperimentConfig)
    return build(ExperimentConfig, data)


def config_from_dict(data: dict) -> ExperimentConfig:
    """The config a run saved (config.yaml, a checkpoint's ``"config"``); one saved before an option moved
    (``MOVED_KEYS``) is read with its value at the option's new key."""
    return build(ExperimentConfig, with_moved_keys(data))


def with_moved_keys(data: dict) -> dict:
    """``data`` (a nested config) with the values of ``MOVED_KEYS``' old keys at their new keys."""
    data = {section: dict(values) if isinstance(values, dict) else values for section, values in data.items()}
    for old, new in MOVED_KEYS.items():
        (old_section, old_term, old_name), (new_section, new_plan, new_name) = old.split("."), new.split(".")
        section, target = data.get(old_section), data.get(new_section, {})
        term = section.get(old_term) if isinstance(section, dict) else None
        if isinstance(term, dict) and old_name in term and isinstance(target, dict):  # else build() says what is wrong
            data[old_section][old_term] = {key: value for key, value in term.items() if key != old_name}
            plan = target.get(new_plan)
            plan = dict(plan) if isinstance(plan, dict) else {}
            plan.setdefault(new_name, term[old_name])
            data[new_section] = {**target, new_plan: plan}
    return data


def print_schema() -> None:
    for key, type_name, default, help_text in describe(ExperimentConfig):
        print(f"{key:32s} {type_name:24s} {default!s:20s} {help_text}")
