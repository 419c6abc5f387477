"""collect_results.py names the protocol each row's runs were trained under (results/protocols.py), on run
directories written by hand (config.yaml + metrics.json; nothing is trained)."""

from __future__ import annotations

import csv
import re

import pytest

from engine.cli import status_of
from scripts import collect_results

from conftest import fake_run

PAPER, RELEASED, README = "paper (CRD)", "released code", "released code, README λ"
# run directory -> (config, overrides, the protocol its row is labelled with)
RUNS = {
    "resnet20_ce": ("cifar100/resnet20_ce.yaml", [], PAPER),
    "resnet20_tffd": ("cifar100/resnet20_tffd.yaml", [], PAPER),
    "resnet20_kd": ("cifar100/resnet20_kd.yaml", [], PAPER),
    "resnet20_tffd_released": ("cifar100/resnet20_tffd_released.yaml", [], README),
    "resnet32_tffd_released": ("cifar100/resnet32_tffd_released.yaml", [], RELEASED),
    # the released code's schedule with the paper's lambdas is its defaults; the README's apply to ResNet-20 too
    "resnet32_tffd_readme": (
        "cifar100/resnet32_tffd_released.yaml",
        ["loss.tffd.lambda_inter=5e-4", "loss.tffd.lambda_intra=8e-4"],
        README,
    ),
    "resnet32_tffd_quick": (
        "cifar100/resnet32_tffd.yaml",
        ["train.epochs=2", "train.milestones=[1]"],
        f"{PAPER}, shortened",
    ),
    "resnet32_tffd_lambda": (
        "cifar100/resnet32_tffd.yaml",
        ["loss.tffd.lambda_intra=1e-3"],
        f"neither (as {PAPER} but for loss.tffd.lambda_intra)",
    ),
    "resnet32_tffd_mixed": (
        "cifar100/resnet32_tffd.yaml",
        ["train.batch_size=128", "train.nesterov=true"],
        f"neither (as {PAPER} but for train.batch_size, train.nesterov)",
    ),
    "mobilenetv2_tffd": ("cifar100/mobilenetv2_tffd.yaml", [], PAPER),  # the CRD benchmark's lr 0.01 for it
    "mobilenetv2_ce": ("cifar100/mobilenetv2_ce.yaml", ["train.lr=0.05"], f"neither (as {PAPER} but for train.lr)"),
    "resnet56_ce_cifar10": ("cifar10/resnet56_ce.yaml", [], RELEASED),
}
# a self-KD table's rows: their dataset's self-KD protocol, as the table's heading says
SELFKD_RUNS = {
    "preact_resnet18_ce": (
        "cifar100/selfkd/cifar_resnet18_ce.yaml",
        ["model.name=preact_resnet18"],
        "Self-KD-Lib's CIFAR-100 protocol",
    ),
    "preact_resnet18_ce_lr": (
        "cifar100/selfkd/cifar_resnet18_ce.yaml",
        ["model.name=preact_resnet18", "train.lr=0.05"],
        "not Self-KD-Lib's CIFAR-100 protocol",
    ),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocols")
    for index, (name, (config, overrides, _)) in enumerate((RUNS | SELFKD_RUNS).items()):
        fake_run(root / name / "seed0", f"configs/{config}", overrides, 60.0 + index, 60.5 + index)
    return root


def collect(capfd, *args: str) -> str:
    assert status_of(collect_results.main, list(map(str, args))) == 0
    return capfd.readouterr().out


def test_every_row_says_which_protocol_it_was_trained_under(root, capfd):
    out = collect(capfd, root)
    table = [line for line in out.splitlines() if line.startswith("| cifar")]
    for index, (name, (_, _, protocol)) in enumerate(RUNS.items()):
        line = next(line for line in table if f"| {60.0 + index:.2f} | {60.5 + index:.2f} |" in line)
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        assert cells[4].startswith(f"{protocol}: batch "), (name, cells[4])
    assert "| cifar100 | resnet20 | KD+Tf-FD | resnet110 |  |  |" in out  # a missing cell: no runs, no protocol
    assert "protocol: the one the runs were trained under" in out


def test_the_csv_has_a_protocol_column(root, capfd, tmp_path):
    collect(capfd, root, "--format", "csv", "--out", tmp_path / "table.csv")
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    labelled = {row["run_dirs"]: row["protocol"] for row in rows if row["run_dirs"]}
    assert labelled == {str(root / name / "seed0"): protocol for name, (_, _, protocol) in (RUNS | SELFKD_RUNS).items()}


def test_the_two_protocols_of_one_method_are_not_drawn_as_a_full_grid(root, capfd):
    """resnet20's Tf-FD rows differ in every protocol key: a grid of the rows there are, not of every combination."""
    out = collect(capfd, root)
    grid = re.search(r"#### resnet20 Tf-FD on cifar100: last-epoch top-1 \(%\)\n\n(.*?)\n\n", out, re.S).group(1)
    assert len(grid.splitlines()) == 2 + 2  # header, separator, one line per row
