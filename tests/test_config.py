"""Typed configs: _base_ inheritance, typed dotted overrides, unknown keys, wrong types."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.typed_config import describe, flatten, to_dict
from core.yaml_files import load_yaml_tree
from engine.config import ExperimentConfig, TrainConfig, load_config
from engine.run_dir import default_run_dir
from losses.kd import KDConfig

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


CRD_MEAN, CRD_STD = [0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]  # RepDistiller's dataset/cifar100.py


def _protocol(config) -> tuple:
    train, data = config.train, config.data
    return (
        train.epochs,
        train.batch_size,
        train.lr,
        train.momentum,
        train.nesterov,
        train.weight_decay,
        train.milestones,
        train.gamma,
        data.padding,
        data.pad_mode,
        data.mean,
        data.std,
    )


def test_the_paper_protocol_configs_resolve_to_the_crd_benchmark_and_the_papers_lambdas():
    config = load_config(REPO / "configs/cifar100/resnet20_tffd.yaml")
    assert config.model.name == "resnet20" and config.data.name == "cifar100"
    assert _protocol(config) == (
        240,
        64,
        0.05,
        0.9,
        False,
        5e-4,
        [150, 180, 210],
        0.1,
        4,
        "constant",
        CRD_MEAN,
        CRD_STD,
    )
    assert config.loss.terms == ["ce", "tffd"]
    assert (config.loss.tffd.lambda_inter, config.loss.tffd.lambda_intra) == (5e-3, 4e-4)  # every model's
    assert config.loss.tffd.warmup_epochs == 20 and not config.loss.tffd.detach_salient
    for row in ("ce", "kd", "kd_tffd"):  # the table's other rows: the same protocol
        assert _protocol(load_config(REPO / f"configs/cifar100/resnet20_{row}.yaml")) == _protocol(config)
    light = load_config(REPO / "configs/cifar100/mobilenetv2_tffd.yaml")  # the CRD benchmark's lr for these students
    assert _protocol(light) == _protocol(config)[:2] + (0.01,) + _protocol(config)[3:]


@pytest.mark.parametrize(
    "model, lambdas", [("resnet20", (5e-4, 8e-4)), ("resnet32", (5e-3, 4e-4)), ("wrn_16_2", (5e-3, 4e-4))]
)
def test_the_released_protocol_configs_resolve_to_the_released_codes_defaults(model, lambdas):
    config = load_config(REPO / f"configs/cifar100/{model}_tffd_released.yaml")
    assert _protocol(config) == (240, 128, 0.1, 0.9, True, 5e-4, [150, 180, 210], 0.1, 4, "reflect", None, None)
    assert (config.loss.tffd.lambda_inter, config.loss.tffd.lambda_intra) == lambdas  # ResNet-20: the README's
    paper = load_config(REPO / f"configs/cifar100/{model}_tffd.yaml")
    assert config.model == paper.model and config.loss.terms == paper.loss.terms
    assert config.loss.tffd.warmup_epochs == paper.loss.tffd.warmup_epochs == 20
    assert (config.data.name, config.data.padding) == (paper.data.name, paper.data.padding)


def test_a_released_config_differs_from_its_paper_config_in_the_protocol_keys_alone():
    protocols = REPO / "configs/_base_/protocols"
    protocol_keys = {
        key
        for name in ("tffd_paper", "tffd_released", "tffd_released_readme")
        for key in flatten(load_yaml_tree(protocols / f"{name}.yaml"))
    }
    assert {
        "train.batch_size",
        "train.lr",
        "train.nesterov",
        "data.pad_mode",
        "loss.tffd.lambda_inter",
    } <= protocol_keys
    released = sorted((REPO / "configs/cifar100").glob("*_tffd_released.yaml"))
    assert len(released) >= 5
    for path in released:
        ours = flatten(to_dict(load_config(path)))
        paper = flatten(to_dict(load_config(path.with_name(path.name.replace("_released", "")))))
        differ = {key for key in ours if ours[key] != paper[key]}
        assert {"train.batch_size", "train.lr"} <= differ <= protocol_keys, path.name


def test_every_shipped_config_loads():
    paths = [p for p in (REPO / "configs").rglob("*.yaml") if "_base_" not in p.parts]
    assert len(paths) >= 17
    for path in paths:
        load_config(path)


def test_base_inheritance_later_files_and_the_child_win(tmp_path):
    write(tmp_path / "a.yaml", "train: {epochs: 5, lr: 0.2}\nmodel: {name: resnet32}\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\ntrain: {lr: 0.3}\n")
    child = write(tmp_path / "sub/c.yaml", "_base_: [../b.yaml]\ntrain: {batch_size: 7}\n")
    config = load_config(child)
    assert (config.train.epochs, config.train.lr, config.train.batch_size) == (5, 0.3, 7)
    assert config.model.name == "resnet32"
    assert config.train.weight_decay == ExperimentConfig().train.weight_decay  # untouched default


def test_overrides_are_typed_like_their_field():
    config = load_config(
        REPO / "configs/quickstart.yaml",
        [
            "loss.tffd.lambda_intra=1e-3",
            "train.epochs=2",
            "train.nesterov=false",
            "data.name=synthetic",
            "train.milestones=[3, 4]",
            "loss.tffd.stages=[2,3]",
            "model.weights=null",
            "seed=7",
        ],
    )
    assert config.loss.tffd.lambda_intra == 1e-3 and isinstance(config.loss.tffd.lambda_intra, float)
    assert config.train.epochs == 2 and config.train.nesterov is False
    assert config.train.milestones == [3, 4] and config.loss.tffd.stages == [2, 3]
    assert config.data.name == "synthetic" and config.model.weights is None and config.seed == 7


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    # YAML 1.1 reads "5e-4" as a string; a float field must still get 0.0005.
    config = load_config(write(tmp_path / "c.yaml", "train: {weight_decay: 5e-4}\n"))
    assert config.train.weight_decay == 5e-4


def test_unknown_key_in_a_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'train.batchsize'; did you mean 'train.batch_size'"):
        load_config(write(tmp_path / "c.yaml", "train: {batchsize: 3}\n"))


@pytest.mark.parametrize(
    "override, message",
    [
        # an unknown key names the nearest valid one
        ("loss.tffd.lamda_intra=1", "did you mean 'loss.tffd.lambda_intra'"),
        ("train.epoch=3", "did you mean 'train.epochs'"),
        ("trian.epochs=3", "did you mean 'train.epochs'"),
        # a wrong value names its key and what the key takes
        ("train.epochs=abc", "train.epochs must be int, got 'abc'"),
        ("train.epochs=1.5", "train.epochs must be int"),
        ("train.nesterov=maybe", "train.nesterov must be bool"),
        ("train.milestones=5", "train.milestones must be list of int"),
        ("train.amp=fp8", "train.amp must be one of none, bf16, fp16"),
        ("train.epochs=0", "train.epochs must be >= 1"),
        ("loss.tffd.lambda_inter=-1", "loss.tffd.lambda_inter must be >= 0"),
        ("noequals", "must look like KEY=VALUE"),
    ],
)
def test_bad_overrides_are_rejected_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "configs/quickstart.yaml", [override])


def test_python_tags_are_refused(tmp_path):
    path = write(tmp_path / "evil.yaml", "seed: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="unsupported YAML tag"):
        load_config(path)


def test_yaml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match="line 3"):
        load_config(write(tmp_path / "bad.yaml", "train:\n  epochs: 3\n  lr: 0.1: 2\nseed: 1\n"))


def test_every_key_is_documented():
    rows = describe(ExperimentConfig)
    assert {"seed", "train.epochs", "loss.tffd.lambda_intra", "teacher.checkpoint"} <= {r[0] for r in rows}
    assert all(help_text for *_, help_text in rows)


def test_default_run_dir_follows_config_and_overrides():
    assert default_run_dir("configs/cifar100/resnet20_tffd.yaml", []) == Path("runs/cifar100/resnet20_tffd")
    with_overrides = default_run_dir("configs/quickstart.yaml", ["seed=1", "train.epochs=2"])
    assert with_overrides == Path("runs/quickstart/seed=1,train.epochs=2")


def numeric_fields(schema, prefix=""):
    """(key, field) of every int or float option, lists of them included, through nested sections."""
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            yield from numeric_fields(annotation, f"{prefix}{field.name}.")
            continue
        leaves = set()
        stack = [annotation]
        while stack:
            node = stack.pop()
            args = typing.get_args(node)
            stack.extend(args) if args else leaves.add(node)
        if leaves & {int, float}:
            yield prefix + field.name, field


def test_every_numeric_option_declares_both_ends_of_its_range():
    """A new option (of any registered loss term, augmentation or batch transform too) cannot forget its
    range, nor leave it open upwards (a width of a million, an exponent of 1e300): bounds are declared with the
    option, below (min/above) and above (max/below), and construction checks them."""
    keys = []
    for key, field in numeric_fields(ExperimentConfig):
        bounds = field.metadata.get("bounds", {})
        assert {"min", "above"} & set(bounds), f"{key} declares no lower bound: give option(...) min= or above="
        assert {"max", "below"} & set(bounds), f"{key} declares no upper bound: give option(...) max= or below="
        keys.append(key)
    assert {
        "seed",
        "train.lr",
        "loss.tffd.lambda_intra",
        "loss.kd.temperature",
        "loss.tffd.pairs",
        "loss.dks.blocks",
        "batch.mixup.alpha",
        "data.random_erase.ratio",
    } <= set(keys)


def test_sections_check_their_values_whoever_constructs_them():
    with pytest.raises(ConfigError, match="temperature must be >= 0.01, got 0"):
        KDConfig(temperature=0.0)
    with pytest.raises(ConfigError, match="lr must be a finite number, got nan"):
        TrainConfig(lr=float("nan"))
    ExperimentConfig()  # every default is within its own range


def test_hparams_rows_hold_what_tells_runs_apart_but_never_a_path():
    from engine.hparams import tensorboard_hparams

    config = load_config(REPO / "configs/quickstart.yaml", ["data.root=/somewhere", "loss.tffd.lambda_intra=4e-4"])
    row = tensorboard_hparams(config, ["data.root", "loss.tffd.lambda_intra"])
    assert row["loss.tffd.lambda_intra"] == 4e-4  # set on the command line, although equal to the default
    assert "data.root" not in row and "train.momentum" not in row  # a path; a default left alone
    assert {"seed", "model.name", "data.name", "loss.terms"} <= set(row)
