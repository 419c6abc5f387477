"""Bad input: every case exits with code 2 and one line on stderr naming the problem, and writes nothing
(no run directory). Checkpoints and YAML from strangers never execute code.

A batch size not divisible across ranks needs two processes: tests/test_ddp.py covers it; an unknown
key given as a command-line override: tests/test_train.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from models import build_model

from conftest import REPO, SMOKE, read_metrics, run_train
from in_process import Finished

BASE = f"_base_: {REPO / 'configs/quickstart.yaml'}\n"
TINY = [*SMOKE, "data.num_train=64", "data.num_test=64", "train.batch_size=32", "train.epochs=1"]


def assert_refused(result: Finished, run_dir: Path, *fragments: str) -> None:
    """Exit code 2, exactly one line on stderr (no traceback) holding every fragment, no run directory."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""
    assert not os.path.exists(run_dir)  # (False for a name too long to exist, too)


def refused(tmp_path: Path, *args: str, config: str = "configs/quickstart.yaml"):
    """Run a tiny training with ``args`` into ``tmp_path/run``; returns (result, run_dir)."""
    run_dir = tmp_path / "run"
    return run_train(*TINY, *args, "--run-dir", str(run_dir), config=config), run_dir


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    return str(path)


def save_weights(path: Path, model_name: str, num_classes: int = 10, run_checkpoint: bool = False) -> str:
    weights = build_model(model_name, num_classes).state_dict()
    torch.save(
        {"model": weights, "model_name": model_name, "num_classes": num_classes} if run_checkpoint else weights, path
    )
    return str(path)


# ---------------------------------------------------------------- config files and values
def test_yaml_syntax_error_names_the_line(tmp_path):
    config = write_config(tmp_path, BASE + "train:\n  epochs: 2\n   lr: 0.1\n")  # line 4 indented one too far
    result, run_dir = refused(tmp_path, config=config)
    assert_refused(result, run_dir, "experiment.yaml: YAML syntax error at line 4, column 6: mapping values")


def test_unknown_key_in_yaml_names_the_nearest_key(tmp_path):
    config = write_config(tmp_path, BASE + "train:\n  weight_dacay: 1.0e-4\n")
    result, run_dir = refused(tmp_path, config=config)
    assert_refused(result, run_dir, "unknown config key 'train.weight_dacay'; did you mean 'train.weight_decay'?")


def test_wrong_type(tmp_path):
    result, run_dir = refused(tmp_path, "train.epochs=two")
    assert_refused(result, run_dir, "train.epochs must be int, got 'two' (str)")


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.tffd.lambda_intra=-1e-3", "loss.tffd.lambda_intra must be >= 0, got -0.001"),
        ("loss.tffd.lambda_inter=nan", "loss.tffd.lambda_inter must be a finite number, got nan"),
        ("loss.tffd.lambda_intra=inf", "loss.tffd.lambda_intra must be a finite number, got inf"),
        ("train.lr=nan", "train.lr must be a finite number, got nan"),
        ("train.lr=-inf", "train.lr must be a finite number, got -inf"),
        ("train.epochs=0", "train.epochs must be >= 1, got 0"),
        ("train.momentum=1.0", "train.momentum must be < 1, got 1"),
        ("train.gamma=0", "train.gamma must be > 0, got 0"),
        ("train.gamma=1.5", "train.gamma must be <= 1, got 1.5"),
        ("train.milestones=[0,5]", "train.milestones[0] must be >= 1, got 0"),
        ("train.milestones=[5,5]", "train.milestones must be increasing, got [5, 5]"),
        ("seed=-1", "seed must be >= 0, got -1"),
        ("loss.ce.label_smoothing=1.5", "loss.ce.label_smoothing must be <= 1, got 1.5"),
        ("loss.kd.temperature=0", "loss.kd.temperature must be >= 0.01, got 0"),
        ("data.std=[0.2,0,0.2]", "data.std[1] must be > 0, got 0"),
        ("data.num_classes=1", "data.num_classes must be >= 2, got 1"),
        ("loss.tffd.stages=[1,1]", "loss.tffd.stages lists 1 twice"),
    ],
)
def test_out_of_range_value(tmp_path, override, message):
    result, run_dir = refused(tmp_path, override)
    assert_refused(result, run_dir, message)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["loss.terms=[ce,kd]", "loss.kd.temperature=1e-300"], "loss.kd.temperature must be >= 0.01, got 1e-300"),
        (["loss.terms=[dlb]", "loss.dlb.temperature=1e300"], "loss.dlb.temperature must be <= 100, got 1e+300"),
        (["loss.terms=[focal]", "loss.focal.gamma=1e300"], "loss.focal.gamma must be <= 10, got 1e+300"),
        (["loss.terms=[ce,zipf_ls]", "loss.zipf_ls.power=1e300"], "loss.zipf_ls.power must be <= 10, got 1e+300"),
        (["loss.terms=[byot]", "loss.byot.width=1000000"], "loss.byot.width must be <= 4096, got 1000000"),
        (["loss.terms=[frskd]", "loss.frskd.depth=1000000"], "loss.frskd.depth must be <= 16, got 1000000"),
        (["loss.terms=[mixskd]", "loss.mixskd.blocks=1000000"], "loss.mixskd.blocks must be <= 16, got 1000000"),
        (["loss.terms=[dks]", "loss.dks.blocks=[[1000000],[2]]"], "loss.dks.blocks[0][0] must be <= 16, got 1000000"),
        (
            ["loss.terms=[ce]", "batch.transforms=[mixup]", "batch.mixup.alpha=1e-300"],
            "batch.mixup.alpha must be >= 0.01",
        ),
        (["loss.ce.weight=1e300"], "loss.ce.weight must be <= 100000, got 1e+300"),
        (["train.lr=1e300"], "train.lr must be <= 100, got 1e+300"),
        (["train.batch_size=100000000"], "train.batch_size must be <= 65536, got 100000000"),
        (["data.image_size=1000000"], "data.image_size must be <= 1024, got 1000000"),
        (
            ["data.num_train=10000000", "data.image_size=1024"],
            "data.name=synthetic: 10000064 images of 1028x1028 pixels (1024 padded by data.padding=2) would take",
        ),
        (["data.name=digits", "data.image_size=1024", "data.padding=1024"], "lower data.image_size or data.padding"),
        (["data.name=cifar100", "data.padding=1024"], "60000 images of 2080x2080 pixels"),
    ],
)
def test_sizes_and_exponents_past_what_an_experiment_uses_are_refused_by_the_range(tmp_path, overrides, message):
    result, run_dir = refused(tmp_path, *overrides)
    assert_refused(result, run_dir, message)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.name=resnet18", "train.batch_size=1"],
            "model.name=resnet18 cannot train on batches of 1 image at "
            "data.image_size=16: a BatchNorm layer's 1x1 feature map then gives it one value per channel; use "
            "train.batch_size >= 2, or use a larger data.image_size",
        ),
        (
            ["model.name=resnet18", "data.num_train=65"],
            "cannot train on its last training batch of each epoch, 1 image "
            "(65 images per process, train.batch_size=32) at data.image_size=16",
        ),
        (
            ["model.name=resnet18", "data.num_train=65"],
            "choose a train.batch_size that leaves no single image over (e.g. 33)",
        ),
        (["model.name=resnet50", "data.num_train=97", "loss.terms=[dlb]"], "1 image (97 images per process"),
        (["model.name=resnet50", "data.num_train=97", "loss.terms=[cs_kd]"], "1 image (97 images per process"),
        (["model.name=resnet18", "data.num_train=1"], "cannot train on 1 training image per process"),
        (
            ["model.name=vgg8", "data.image_size=4"],
            "model.name=vgg8 cannot take 4x4 images: its pooling shrinks them to nothing (Given input size: (256x1x1)",
        ),
    ],
)
def test_a_model_that_cannot_train_on_the_data_is_refused_before_anything_is_written(tmp_path, overrides, message):
    result, run_dir = refused(tmp_path, *overrides)
    assert_refused(result, run_dir, message)


def test_the_smallest_batch_check_leaves_the_model_and_the_random_stream_as_they_were():
    from engine.builder import check_trains_on_smallest_batch, smallest_train_batch

    assert [
        smallest_train_batch(n, w, b) for n, w, b in [(65, 1, 32), (64, 1, 32), (20, 1, 32), (130, 2, 32), (131, 2, 32)]
    ] == [1, 32, 20, 1, 1]
    model = build_model("resnet20", 10)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    check_trains_on_smallest_batch(model, 16, 1, 65, 1, 32, "resnet20")  # 4x4 at the end: trains
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_label_smoothing_to_the_other_classes_leaves_the_target_the_most(tmp_path):
    """With ``others`` the target keeps 1 - eps and each of the K - 1 others eps / (K - 1): past eps = (K-1)/K
    the target would get less than each other class (and torch's smoothing would be out of range)."""
    result, run_dir = refused(tmp_path, "loss.ce.label_smoothing=0.95", "loss.ce.label_smoothing_to=others")
    assert_refused(result, run_dir, "loss.ce.label_smoothing=0.95 with label_smoothing_to=others", "at most 0.9")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "experiment.yaml is empty; a config names its _base_ files or sets at least one key"),
        ("# only a comment\n", "experiment.yaml is empty"),
        (
            BASE + "train:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n",
            "experiment.yaml: key 'epochs' appears twice, at lines 3 and 5",
        ),
        (BASE + "seed: 1\nseed: 2\n", "experiment.yaml: key 'seed' appears twice, at lines 2 and 3"),
        ("_base_: 5\n", "experiment.yaml: _base_ must be a path or a list of paths (relative to the file), got 5"),
        ("_base_: [quickstart.yaml, {a: 1}]\n", "_base_ must be a path or a list of paths"),
        (b"seed: 1 # \xff\xfe\n", "experiment.yaml is not UTF-8 text (byte 10"),
        ("- 1\n- 2\n", "experiment.yaml: the top level must be a mapping of keys, got list"),
    ],
)
def test_bad_config_file(tmp_path, text, message):
    path = tmp_path / "experiment.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result, run_dir = refused(tmp_path, config=str(path))
    assert_refused(result, run_dir, message)


def test_unknown_model_lists_the_known_ones(tmp_path):
    result, run_dir = refused(tmp_path, "model.name=resnet21")
    assert_refused(result, run_dir, "unknown model 'resnet21'; known models:", "resnet20", "resnet32")


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    result, run_dir = refused(tmp_path, "data.name=cifar1000")
    assert_refused(result, run_dir, "unknown dataset 'cifar1000'; known datasets:", "cifar100", "synthetic")


def test_missing_dataset_directory_names_the_expected_folder(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    result, run_dir = refused(tmp_path, "data.name=cifar100", f"data.root={empty}")
    assert_refused(result, run_dir, f"cifar100 not found in {empty / 'cifar-100-python'}", "data.download=true")


# ---------------------------------------------------------------- checkpoints
def test_missing_checkpoint(tmp_path):
    result, run_dir = refused(tmp_path, f"model.weights={tmp_path / 'nowhere.pt'}")
    assert_refused(result, run_dir, f"model.weights not found: {tmp_path / 'nowhere.pt'}")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_checkpoint(tmp_path, damage):
    path = tmp_path / "weights.pt"
    save_weights(path, "resnet20")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else bytes(range(256)) * 64)
    result, run_dir = refused(tmp_path, f"model.weights={path}")
    assert_refused(result, run_dir, f"model.weights {path} is corrupt, truncated or not a PyTorch checkpoint")


@pytest.mark.parametrize(
    "saved_model, model, problem",
    [
        ("resnet32", "resnet20", "unexpected"),  # deeper: extra blocks
        ("resnet20", "resnet32", "missing"),
    ],
)
def test_checkpoint_of_another_architecture_names_the_keys(tmp_path, saved_model, model, problem):
    path = save_weights(tmp_path / "weights.pt", saved_model)
    saved, expected = (list(build_model(name, 10).state_dict()) for name in (saved_model, model))
    keys = {"unexpected": [k for k in saved if k not in expected], "missing": [k for k in expected if k not in saved]}
    result, run_dir = refused(tmp_path, f"model.name={model}", f"model.weights={path}")
    assert_refused(result, run_dir, f"model.weights {path} does not fit the model: {problem} keys {keys[problem][0]}, ")


KD = ["loss.terms=[ce,kd]", "teacher.model=resnet20"]


def test_teacher_trained_for_another_class_count(tmp_path):
    path = save_weights(tmp_path / "teacher.pt", "resnet20", num_classes=100, run_checkpoint=True)
    result, run_dir = refused(tmp_path, *KD, f"teacher.checkpoint={path}")
    assert_refused(result, run_dir, "was trained for 100 classes, but the dataset has 10")


def test_teacher_state_dict_with_another_class_count_names_the_classifier(tmp_path):
    path = save_weights(tmp_path / "teacher.pt", "resnet20", num_classes=100)
    wide, narrow = build_model("resnet20", 100).state_dict(), build_model("resnet20", 10).state_dict()
    classifier = next(key for key in narrow if wide[key].shape != narrow[key].shape)
    result, run_dir = refused(tmp_path, *KD, f"teacher.checkpoint={path}")
    assert_refused(
        result,
        run_dir,
        "does not fit the model: shape mismatches (file vs model) "
        f"{classifier} {tuple(wide[classifier].shape)} vs {tuple(narrow[classifier].shape)}",
    )


# ---------------------------------------------------------------- run directories
def test_run_dir_that_is_a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    result = run_train(*TINY, "--run-dir", str(path))
    assert_refused(result, tmp_path / "run", f"--run-dir {path}: {path} is a file, not a directory")
    assert path.read_text() == "my notes\n"


@pytest.mark.parametrize(
    "where, message",
    [
        ("/proc/tffd_run", "/proc is on a pseudo-filesystem (like /proc) that holds no files"),
        ("/sys/tffd_run", "/sys is on a"),  # sysfs, mounted read-only in some containers
        ("{tmp}/" + "n" * 300, "is longer than the 255 bytes this filesystem allows"),
    ],
)
def test_run_dir_that_cannot_be_written(tmp_path, where, message):
    where = where.format(tmp=tmp_path)
    result = run_train(*TINY, "--run-dir", where)
    assert_refused(result, Path(where), f"--run-dir {where}", message)


def test_finished_run_is_not_overwritten_without_the_flag(tmp_path):
    run_dir = tmp_path / "run"
    run_train(*TINY, "--run-dir", str(run_dir), check=True)
    before = {path.name: path.read_bytes() for path in run_dir.iterdir()}
    result = run_train(*TINY, "--run-dir", str(run_dir))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {run_dir} holds a finished run (best top-1 {read_metrics(run_dir)['best_acc1']}%); "
        f"pass --overwrite to replace it or choose another --run-dir"
    ]
    assert {path.name: path.read_bytes() for path in run_dir.iterdir()} == before


# ---------------------------------------------------------------- safety: nothing from a file executes
class WritesMarker:
    """Unpickling this calls exec, which writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def test_malicious_pickle_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "weights.pt"
    torch.save({"model": build_model("resnet20", 10).state_dict(), "extra": WritesMarker(marker)}, path)
    # The file really is malicious: an unsafe load writes the marker.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"
    marker.unlink()

    result, run_dir = refused(tmp_path, f"model.weights={path}")
    assert_refused(
        result, run_dir, f"model.weights {path} needs arbitrary unpickling (it would call exec,", "refused for safety"
    )
    assert not marker.exists()


def test_yaml_python_object_tag_is_refused(tmp_path):
    marker = tmp_path / "marker"
    payload = f"open({str(marker)!r}, 'w')"
    config = write_config(tmp_path, BASE + f'seed: !!python/object/apply:builtins.exec ["{payload}"]\n')
    # The file really is malicious: an unsafe YAML load creates the marker.
    with open(config) as text:
        yaml.unsafe_load(text)
    assert marker.exists()
    marker.unlink()

    result, run_dir = refused(tmp_path, config=config)
    assert_refused(
        result,
        run_dir,
        "experiment.yaml: unsupported YAML tag (only plain YAML is allowed)",
        "python/object/apply:builtins.exec",
    )
    assert not marker.exists()


# ---------------------------------------------------------------- hostile YAML: bounded, and echoed short
def _alias_bomb(levels: int = 9) -> str:
    """Billion laughs: a few hundred bytes whose aliases expand to 9**levels values."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (BASE + _alias_bomb(), "holds 490329066 values (each alias *name counted where it stands), more than 100000"),
        (BASE + "train:\n  milestones: &m [1, *m]\n", "refers to itself: an alias (*name) inside its own anchor"),
        (BASE + "seed: " + "[" * 100_000 + "]" * 100_000 + "\n", "is nested more than 32 levels deep (at line 2)"),
        (BASE + "".join("  " * i + f"k{i}:\n" for i in range(2000)) + "  " * 2000 + "v\n", "is nested more than 32"),
        (
            BASE + "a: &a [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]\nb: [[[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]]\n",
            "is nested more than 32 levels deep through its aliases",
        ),
        (BASE + "seed: " + "9" * 5000 + "\n", "holds an integer of 5000 characters at line 2"),
    ],
)
def test_a_config_that_would_expand_past_its_bounds_is_one_short_line(tmp_path, text, message):
    result, run_dir = refused(tmp_path, config=write_config(tmp_path, text))
    assert_refused(result, run_dir, "experiment.yaml: refused: the document ", message)
    assert len(result.stderr) < 400


@pytest.mark.parametrize(
    "yaml_text, args, message",
    [
        (BASE + "seed: " + "x" * 1_000_000 + "\n", [], "seed must be int, got 'xxxxxxx"),
        (BASE + "loss:\n  terms: [" + ", ".join(["ce"] * 100_001) + "]\n", [], "holds 100008 values (each alias"),
        (BASE + "loss:\n  terms: [" + ", ".join(["ce"] * 10_000) + "]\n", [], "loss.terms"),
        (BASE + "x" * 1000 + ": 1\n", [], "unknown config key 'xxxxx"),
        (
            BASE,
            ["loss.terms=[" + ",".join(["[" * 36] * 2) + "]"],
            "loss.terms: refused: the value is nested more than 32",
        ),
        (BASE, ["train.milestones=" + "[" * 50_000], "train.milestones: "),
        (BASE, ["seed=" + "7" * 100_000], "seed must be int, got '7777"),
    ],
)
def test_errors_echo_a_huge_value_shortened(tmp_path, yaml_text, args, message):
    result, run_dir = refused(tmp_path, *args, config=write_config(tmp_path, yaml_text))
    assert_refused(result, run_dir, message)
    assert len(result.stderr) < 400, len(result.stderr)
