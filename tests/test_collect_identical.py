"""collect_results.py's every output, byte for byte: a corpus of run directories written by hand (config.yaml +
metrics.json; nothing is trained) that reaches every table, note, format, warning and error, collected with
each option, against the outputs recorded in tests/golden/collect_results/<case>.txt. A refactoring of the
collection (the results package, results/) must leave each of them unchanged; a change that is meant to change
an output records them again:

    UPDATE_GOLDEN=1 python -m pytest -q tests/test_collect_identical.py

Each golden file holds the command line, the exit status, stdout, stderr and every file the command wrote
(the corpus's directory shown as <ROOT>, the output directory as <OUT>). Figures are compared by the data
handed to the drawing (the specs: curves, heatmap cells, bars) and by the files written with their PNG
pixel sizes, not by their bytes, which depend on matplotlib's version and fonts."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import sys

import pytest

from engine.cli import status_of
from results import figures
from scripts import collect_results

from conftest import REPO, fake_run

GOLDEN = REPO / "tests" / "golden" / "collect_results"


def calibrated(best: float, ece: float = 3.0, nll: float = 1.1, epochs: int = 3) -> dict:
    """metrics.json's calibration keys and a history climbing to ``best``."""
    history = [
        {"epoch": epoch, "test_acc1": best - (epochs - epoch) * 0.7, "test_ece": ece, "test_nll": nll}
        for epoch in range(1, epochs + 1)
    ]
    return {
        "best_ece": ece,
        "last_ece": ece + 1,
        "best_nll": nll,
        "last_nll": nll + 0.1,
        "best_aurc": 80.0 - ece,
        "last_aurc": 81.0 - ece,
        "history": history,
    }


PREACT = ["model.name=preact_resnet18"]
SELFKD = "configs/cifar100/selfkd/cifar_resnet18_{}.yaml"
# (run directory under the corpus, config, overrides, last top-1, best top-1, epochs done, extra metrics)
RUNS = [
    # the Tf-FD paper's table on CIFAR-100: seeds with a history and calibration, an unfinished seed, an old run
    # without either, KD with its teacher's accuracy, the released protocol (IJCNN number †), WRN-40-1 (CRD's)
    *(
        (
            f"paper/resnet20_ce/seed{seed}",
            "configs/cifar100/resnet20_ce.yaml",
            [f"seed={seed}"],
            best - 0.3,
            best,
            240,
            calibrated(best, ece, nll),
        )
        for seed, (best, ece, nll) in enumerate([(69.3, 4.0, 1.25), (69.5, 5.0, 1.35)])
    ),
    ("paper/resnet20_ce/seed2", "configs/cifar100/resnet20_ce.yaml", ["seed=2"], 60.0, 61.0, 100, {}),
    ("paper/resnet20_tffd/seed0", "configs/cifar100/resnet20_tffd.yaml", [], 70.3, 70.5, 240, {}),
    *(
        (
            f"paper/resnet20_kd/seed{seed}",
            "configs/cifar100/resnet20_kd.yaml",
            [f"seed={seed}"],
            70.1 + seed,
            70.6 + seed,
            240,
            {"teacher_acc1": 74.2 + seed / 10, **calibrated(70.6 + seed)},
        )
        for seed in (0, 1)
    ),
    ("paper/resnet20_tffd_released/seed0", "configs/cifar100/resnet20_tffd_released.yaml", [], 70.0, 70.4, 240, {}),
    ("paper/wrn_40_1_ce/seed0", "configs/cifar100/wrn_40_1_ce.yaml", [], 71.5, 71.9, 240, calibrated(71.9)),
    ("paper/wrn_40_1_kd/seed0", "configs/cifar100/wrn_40_1_kd.yaml", [], 73.0, 73.3, 240, {"teacher_acc1": 75.5}),
    # a 3 x 2 lambda sweep with a missing cell, an unfinished cell and a cell with one of two seeds finished
    *(
        (
            f"paper/resnet32_tffd/{intra}_{inter}_seed{seed}",
            "configs/cifar100/resnet32_tffd.yaml",
            [f"loss.tffd.lambda_intra={intra}", f"loss.tffd.lambda_inter={inter}", f"seed={seed}"],
            best - 0.5,
            best,
            done,
            calibrated(best),
        )
        for intra, inter, seed, best, done in [
            (1e-4, 5e-4, 0, 72.0, 240),
            (8e-4, 5e-4, 0, 73.0, 240),
            (1e-4, 5e-3, 0, 73.0, 240),
            (4e-4, 5e-3, 0, 72.5, 240),
            (4e-4, 5e-3, 1, 72.9, 240),
            (8e-4, 5e-3, 0, 71.0, 240),
            (8e-4, 5e-3, 1, 70.0, 120),
            (4e-4, 5e-4, 0, 50.0, 40),
        ]
    ),
    # a one-key sweep with a teacher; a sweep of a string and a bool key that is not a full grid
    *(
        (
            f"paper/vgg8_kd/t{temperature}",
            "configs/cifar100/vgg8_kd.yaml",
            [f"loss.kd.temperature={temperature}"],
            72.0 + temperature / 10,
            72.5 + temperature / 10,
            240,
            {},
        )
        for temperature in (2.0, 4.0, 8.0)
    ),
    ("paper/resnet8x4_tffd/default", "configs/cifar100/resnet8x4_tffd.yaml", [], 73.0, 73.4, 240, {}),
    (
        "paper/resnet8x4_tffd/reflect",
        "configs/cifar100/resnet8x4_tffd.yaml",
        ["data.pad_mode=reflect"],
        73.2,
        73.6,
        240,
        {},
    ),
    (
        "paper/resnet8x4_tffd/nesterov",
        "configs/cifar100/resnet8x4_tffd.yaml",
        ["train.nesterov=true"],
        72.8,
        73.1,
        240,
        {},
    ),
    # the protocols: shortened, neither, the CRD benchmark's low learning rate of MobileNetV2; a model the
    # paper has no row of; a run that has not finished an epoch (no metrics.json)
    (
        "paper/resnet56_tffd/quick",
        "configs/cifar100/resnet56_tffd.yaml",
        ["train.epochs=2", "train.milestones=[1]"],
        40.0,
        41.0,
        240,
        {},
    ),
    (
        "paper/resnet56_tffd/lambda",
        "configs/cifar100/resnet56_tffd.yaml",
        ["loss.tffd.lambda_intra=1e-3"],
        72.0,
        72.2,
        240,
        {},
    ),
    ("paper/mobilenetv2_tffd/seed0", "configs/cifar100/mobilenetv2_tffd.yaml", [], 66.0, 66.5, 240, {}),
    ("paper/mobilenetv2_ce/seed0", "configs/cifar100/mobilenetv2_ce.yaml", ["train.lr=0.05"], 64.0, 64.4, 240, {}),
    ("paper/resnet110_ce/seed0", "configs/cifar100/resnet110_ce.yaml", [], 74.0, 74.4, 240, calibrated(74.4)),
    ("paper/vgg13_ce/seed0", "configs/cifar100/vgg13_ce.yaml", [], None, None, 240, {}),
    # another dataset of the paper table's kind; ImageNet's IJCNN cells (KD with a ResNet-34 teacher)
    ("cifar10/resnet56_ce/seed0", "configs/cifar10/resnet56_ce.yaml", [], 93.0, 93.4, 240, {}),
    (
        "imagenet/resnet18_kd/seed0",
        "configs/imagenet/resnet18_ce.yaml",
        ["loss.terms=[ce,kd]", "teacher.model=resnet34"],
        70.2,
        70.4,
        240,
        {"teacher_acc1": 73.1},
    ),
    ("imagenet/resnet34_ce/seed0", "configs/imagenet/resnet18_ce.yaml", ["model.name=resnet34"], 73.0, 73.2, 240, {}),
    # the self-KD tables: Self-KD-Lib's backbone and protocol (like-for-like), with methods whose settings and
    # Tf-FD options vary, published calibration numbers beside ours
    *(
        (
            f"selfkd/preact_{method}/seed0",
            SELFKD.format(method),
            PREACT,
            best - 0.4,
            best,
            240,
            calibrated(best, 2.0, 0.9),
        )
        for method, best in [
            ("ce", 76.0),
            ("label_smoothing", 78.0),
            ("cs_kd", 78.2),
            ("cs_kd_tffd", 78.6),
            ("ps_kd", 79.0),
            ("tf_kd_reg", 76.5),
            ("mixup", 78.5),
            ("mixup_tffd", 78.9),
            ("byot", 77.5),
        ]
    ),
    ("selfkd/preact_ps_kd/alpha", SELFKD.format("ps_kd"), [*PREACT, "loss.ps_kd.alpha_T=0.6"], 78.4, 78.8, 240, {}),
    (
        "selfkd/preact_mixup_tffd/lambda",
        SELFKD.format("mixup_tffd"),
        [*PREACT, "loss.tffd.lambda_intra=1e-3"],
        78.0,
        78.3,
        240,
        calibrated(78.3),
    ),
    ("selfkd/preact_mixup_tffd/seed1", SELFKD.format("mixup_tffd"), [*PREACT, "seed=1"], 70.0, 71.0, 150, {}),
    # the same backbone under another weight decay: a second table of that model, not the protocol
    *(
        (
            f"selfkd/preact_{method}_wd/seed0",
            SELFKD.format(method),
            [*PREACT, "train.weight_decay=1e-4"],
            best - 0.2,
            best,
            240,
            {},
        )
        for method, best in [("ce", 75.0), ("mixup", 77.0)]
    ),
    # the post-activation CIFAR ResNet-18 (Tf-KD's and BYOT's repositories), and a dataset without a protocol
    *(
        (f"selfkd/cifar_resnet18_{method}/seed0", SELFKD.format(method), [], best - 0.3, best, 240, {})
        for method, best in [("ce", 75.5), ("tf_kd_reg", 76.9), ("byot", 78.0), ("cutout_tffd", 77.0)]
    ),
    (
        "selfkd/cifar10_resnet18_ce/seed0",
        SELFKD.format("ce"),
        ["data.name=cifar10", "data.num_classes=10"],
        94.0,
        94.5,
        240,
        {},
    ),
    # IJCNN's method + Tf-FD rows under its own protocol
    *(
        (f"selfkd/resnet32_{method}/seed0", f"configs/cifar100/resnet32_{method}.yaml", [], best - 0.3, best, 240, {})
        for method, best in [("label_smoothing_tffd", 73.0), ("cutout_tffd", 72.6), ("autoaugment_tffd", 72.7)]
    ),
    # ImageNet's self-KD tables: the 100-epoch recipe, MobileNetV2's own 300-epoch one
    *(
        (
            f"imagenet/{model}_{method}/seed0",
            f"configs/imagenet/{model}_{method}.yaml",
            [],
            best - 0.2,
            best,
            240,
            calibrated(best),
        )
        for model, method, best in [
            ("resnet18", "ce", 69.8),
            ("resnet18", "label_smoothing_tffd", 70.5),
            ("resnet18", "uskd", 70.6),
            ("mobilenetv2", "ce", 71.5),
            ("mobilenetv2", "uskd", 72.0),
        ]
    ),
]


def corpus(root):
    """Every run of RUNS, and the damage collect_results.py warns about and skips."""
    for name, config, overrides, last, best, done, extra in RUNS:
        fake_run(root / name, config, overrides, last, best, done, **extra)
    (root / "paper/resnet20_ce/seed1_copy").mkdir()  # a config.yaml without metrics.json: no epoch yet
    (root / "paper/resnet20_ce/seed1_copy/config.yaml").write_bytes(
        (root / "paper/resnet20_ce/seed1/config.yaml").read_bytes().replace(b"seed: 1", b"seed: 3")
    )
    (root / "damaged/metrics").mkdir(parents=True)
    (root / "damaged/metrics/config.yaml").write_bytes((root / "paper/resnet20_tffd/seed0/config.yaml").read_bytes())
    (root / "damaged/metrics/metrics.json").write_text('{"best_acc1": 70.0, "last_acc1"')
    (root / "damaged/config").mkdir(parents=True)
    (root / "damaged/config/config.yaml").write_text("model: [unclosed\n")
    (root / "empty").mkdir()
    (root / "a_file").write_text("not a directory")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    corpus(root)
    return root


# case -> the command line's arguments ({root}: the corpus; {out}: an empty directory for what it writes)
CASES = {
    "text": ["{root}"],
    "text_metrics": ["{root}", "--metrics", "ece,nll,aurc"],
    "markdown": ["{root}", "--format", "markdown"],
    "markdown_metrics": ["{root}", "--format", "markdown", "--metrics", "aurc,acc1,ece"],
    "csv": ["{root}", "--format", "csv"],
    "csv_metrics": ["{root}", "--format", "csv", "--metrics", "nll,ece,aurc"],
    "latex": ["{root}", "--format", "latex"],
    "latex_metrics": ["{root}", "--format", "latex", "--metrics", "ece,nll,aurc"],
    "out_and_csv": [
        "{root}",
        "--format",
        "latex",
        "--metrics",
        "nll",
        "--out",
        "{out}/table.tex",
        "--csv",
        "{out}/table.csv",
    ],
    "out_markdown": ["{root}/selfkd", "--format", "markdown", "--out", "{out}/table.md"],
    "one_dataset": ["{root}/paper"],
    "one_dataset_latex": ["{root}/paper", "--format", "latex", "--metrics", "ece"],
    "selfkd": ["{root}/selfkd", "--metrics", "ece,nll,aurc"],
    "two_roots": ["{root}/imagenet", "{root}/cifar10", "--metrics", "nll"],
    "plots": ["{root}", "--plots", "{out}/figures"],
    "plots_selfkd": ["{root}/selfkd", "--metrics", "ece", "--plots", "{out}/figures"],
    "plots_none": ["{root}/cifar10", "--plots", "{out}/figures"],
    # bad input: one error line, exit 2, nothing written
    "no_runs": ["{root}/empty"],
    "default_root_missing": [],
    "root_missing": ["{root}/absent"],
    "root_a_file": ["{root}/a_file"],
    "bad_metrics": ["{root}", "--metrics", "acc1,ecee"],
    "bad_format": ["{root}", "--format", "xml"],
    "unknown_option": ["{root}", "--bogus"],
    "out_directory_missing": ["{root}", "--out", "{out}/absent/table.md"],
    "out_a_directory": ["{root}", "--out", "{out}"],
    "csv_directory_missing": ["{root}", "--csv", "{out}/absent/table.csv"],
    "plots_a_file": ["{root}", "--plots", "{root}/a_file"],
}


def plain(value):
    """A figure spec as JSON data: dataclasses as their fields, tuple keys joined, floats exact (repr)."""
    if dataclasses.is_dataclass(value):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {
            " | ".join(map(str, key)) if isinstance(key, tuple) else str(key): plain(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return repr(value) if isinstance(value, float) else value


def png_size(path) -> list[int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the IHDR chunk
    return [width, height]


def collected(case: str, root, out, monkeypatch, capfd) -> str:
    """The case's command line, exit status, stdout, stderr, the files it wrote and the figures' specs."""
    args = [arg.format(root=root, out=out) for arg in CASES[case]]
    specs = []
    write_figures = figures.write_figures

    def recording(where, *specs_of_each_kind):
        specs.append(plain(specs_of_each_kind))
        return write_figures(where, *specs_of_each_kind)

    monkeypatch.setattr(figures, "write_figures", recording)
    monkeypatch.setattr(sys, "argv", ["collect_results.py"])  # argparse's prog in its usage line
    monkeypatch.setenv("COLUMNS", "120")  # argparse's line width
    monkeypatch.chdir(out)
    try:
        code = status_of(collect_results.main, args)
    except SystemExit as exit:  # argparse's errors
        code = exit.code
    stdout, stderr = capfd.readouterr()
    parts = [
        f"$ collect_results.py {' '.join(CASES[case])}",
        f"exit {code}",
        "--- stdout",
        stdout,
        "--- stderr",
        stderr,
    ]
    for path in sorted(path for path in out.rglob("*") if path.is_file()):
        name = path.relative_to(out).as_posix()
        if path.suffix == ".png":
            parts += [f"--- file {name}: {png_size(path)[0]} x {png_size(path)[1]} pixels"]
        elif path.suffix == ".pdf":
            parts += [f"--- file {name}: PDF" if path.read_bytes().startswith(b"%PDF-") else f"--- file {name}: ?"]
        else:
            parts += [f"--- file {name}", path.read_bytes().decode()]
    if specs:
        parts += ["--- figures", json.dumps(specs, indent=1, ensure_ascii=False)]
    text = "\n".join(parts) + "\n"
    return text.replace(str(root), "<ROOT>").replace(str(out), "<OUT>")


@pytest.mark.parametrize("case", CASES)
def test_every_output_is_the_recorded_one_byte_for_byte(case, root, tmp_path, monkeypatch, capfd):
    out = tmp_path / "out"
    out.mkdir()
    got, recorded = collected(case, root, out, monkeypatch, capfd), GOLDEN / f"{case}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        recorded.parent.mkdir(parents=True, exist_ok=True)
        recorded.write_bytes(got.encode())  # bytes: the CSV's lines end in \r\n
    assert got == recorded.read_bytes().decode(), f"{case}: differs from {recorded.relative_to(REPO)}"
