"""Every published number of results/published.py shows in collect_results.py's tables, beside the rows of
its backbone and method, with the note that names its source: run directories written by hand (config.yaml +
metrics.json; nothing is trained) for every config those numbers match, collected by collect_results.main."""

from __future__ import annotations

import csv
import re

import pytest

from results import published
from scripts import collect_results

from conftest import fake_run
from in_process import run_main

PREACT = ["model.name=preact_resnet18"]
CALIBRATION = {"best_ece": 3.0, "last_ece": 3.5, "best_nll": 1.0, "last_nll": 1.1, "best_aurc": 60.0, "last_aurc": 61.0}
RUNS = [  # (run directory, config, overrides): a run for each cell a published number belongs to
    *((f"{m}_tffd", f"cifar100/{m}_tffd.yaml", []) for m in ("resnet20", "resnet32", "wrn_16_2", "wrn_40_1")),
    *(
        (f"{m}_{row}", f"cifar100/{m}_{row}.yaml", [])
        for m in ("resnet20", "resnet32", "wrn_16_2", "wrn_40_1")
        for row in ("kd_tffd", "label_smoothing_tffd")
    ),
    ("wrn_40_1_ce", "cifar100/wrn_40_1_ce.yaml", []),
    ("wrn_40_1_kd", "cifar100/wrn_40_1_kd.yaml", []),
    ("resnet32_cutout_tffd", "cifar100/resnet32_cutout_tffd.yaml", []),
    ("resnet32_autoaugment_tffd", "cifar100/resnet32_autoaugment_tffd.yaml", []),
    *(
        (f"preact_{m}", f"cifar100/selfkd/cifar_resnet18_{m}.yaml", PREACT)
        for m in ("ce", "label_smoothing", "cs_kd", "ps_kd", "tf_kd_reg")
    ),
    ("cifar_resnet18_ce", "cifar100/selfkd/cifar_resnet18_ce.yaml", []),
    *(
        (f"imagenet_{m}", f"imagenet/{m}.yaml", [])
        for m in (
            "resnet18_ce",
            "resnet18_label_smoothing_tffd",
            "resnet50_ce",
            "resnet50_uskd",
            "mobilenetv1_ce",
            "mobilenetv1_uskd",
            "mobilenetv2_ce",
            "mobilenetv2_uskd",
        )
    ),
    ("imagenet_resnet34_ce", "imagenet/resnet18_ce.yaml", ["model.name=resnet34"]),  # the KD rows' teacher
]


def every_number() -> list:
    """Every published number that belongs to a backbone of ours, as (method label, Published)."""
    entries = [
        (f"{name}{suffix}", number)
        for table, suffix in (
            (published.SELFKD_PUBLISHED, ""),
            (published.IMAGENET_PUBLISHED, ""),
            (published.SELFKD_PUBLISHED_TFFD, " + Tf-FD"),
            (published.IJCNN_TABLE, ""),
        )
        for name, numbers in table.items()
        for number in numbers
    ]
    entries += [(reference.label, reference.number) for reference in published.REFERENCES]
    return [(label, number) for label, number in entries if number.model is not None]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The text report (with every calibration column) and the CSV of all those runs."""
    root = tmp_path_factory.mktemp("published")
    for name, config, overrides in RUNS:
        fake_run(root / name / "seed0", f"configs/{config}", overrides, 70.0, 70.5, **CALIBRATION)
    out = run_main(
        collect_results.main, [str(root), "--metrics", "ece,nll,aurc", "--csv", str(root / "table.csv")], check=True
    ).stdout
    return out, list(csv.DictReader((root / "table.csv").open()))


def blocks(out: str) -> dict[tuple[str, str], list[str]]:
    """(dataset, model) -> the texts that show its numbers, each with its own notes: its self-KD tables, and
    its lines of the paper table with that table's notes."""
    paper, _, selfkd = out.partition("### Self-distillation")
    paper_notes = "\n".join(line for line in paper.splitlines() if not line.startswith("|"))
    found: dict[tuple[str, str], list[str]] = {}
    for model, dataset, text in re.findall(r"#### (\S+) on (\S+):[^\n]*\n(.*?)(?=\n#### |\Z)", selfkd, re.S):
        found.setdefault((dataset, model), []).append(text)
    for line in paper.splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) > 3 and cells[0] in ("cifar100", "imagenet"):
            found.setdefault((cells[0], cells[1]), []).append(line + "\n" + paper_notes)
    return found


def shown_with_its_source(number, text: str) -> bool:
    """``number``'s value in ``text`` with the index of a note that names its source."""
    notes = dict(re.findall(r"^\[(\d+)\] (.*?)\.(?: (?:Like-for-like|†).*)?$", text, re.M))
    indices = re.findall(rf"{number.top1:.2f}(?: \(CE [\d.]+\))? \[(\d+)\]", text)
    return any(notes.get(index) == number.source for index in indices)


def test_every_published_number_shows_with_its_own_source(report):
    out, _ = report
    found = blocks(out)
    missing = []
    for label, number in every_number():
        if not any(shown_with_its_source(number, text) for text in found.get((number.dataset, number.model), [])):
            missing.append(f"{label} {number.top1} ({number.dataset} {number.model})")
    assert not missing and len(every_number()) >= 60, missing


def test_the_paper_table_has_wrn_40_1_and_the_ijcnn_numbers_beside_like_for_like_rows(report):
    out, rows = report
    lines = {
        tuple(cell.strip() for cell in line.split("|")[2:4]): line
        for line in out.splitlines()
        if line.startswith("| cifar100 |")
    }
    assert "| 71.98 |" in lines[("wrn_40_1", "Baseline")] and "| 73.54 |" in lines[("wrn_40_1", "KD")]
    # the two IJCNN tables disagree on WRN-40-1's Tf-FD: both shown, each with its table; the run follows
    # their protocol (batch 64, lr 0.05), so neither is marked †
    assert re.search(r"\| 73\.08 \[\d+\]; 73\.09 \[\d+\] \|", lines[("wrn_40_1", "Tf-FD")])
    assert "| 74.46 [" in lines[("wrn_40_1", "KD+Tf-FD")] and "†" not in lines[("wrn_40_1", "KD+Tf-FD")]
    by_cell = {(row["dataset"], row["model"], row["method"]): row for row in rows}
    for model, method, _, top1 in published.paper_cells():  # the paper column: the poster's or CRD's
        assert float(by_cell[("cifar100", model, method)]["paper"]) == top1
        assert by_cell[("cifar100", model, method)]["paper_source"] == published.paper_source(model)
        assert f"paper: {published.paper_source(model)}." in out
    wrn = by_cell[("cifar100", "wrn_40_1", "Baseline")]
    assert float(wrn["paper"]) == 71.98 and wrn["paper_source"].startswith("CRD benchmark README")
    assert by_cell[("cifar100", "wrn_16_2", "Tf-FD")]["published_other"].startswith("74.39 (Tf-FD's IJCNN")
    kd = [line for line in out.splitlines() if line.startswith("| imagenet | resnet18 | KD |")]
    assert len(kd) == 1 and "| 70.66 [" in kd[0] and "missing" in kd[0]  # the ImageNet table's KD row


def test_label_smoothing_rows_and_published_calibration_beside_ours(report):
    out, _ = report
    table = out.split("#### preact_resnet18 on cifar100")[1].split("####")[0]
    lines = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines() if line.startswith("|")]
    header, rows = lines[0], {line[0]: line for line in lines[2:]}
    ls = rows["LS"]  # CE with label smoothing: its own row, beside Self-KD-Lib's 78.72 (like-for-like)
    assert ls[header.index("published top-1, alone [note]")].startswith("78.72 [1]; 79.06 [")
    assert ls[header.index("Δ best, alone − like-for-like published")] == "-8.22"
    expected = {
        "CE": (11.84, 1.10, 67.65),
        "LS": (10.79, 0.98, 57.74),
        "CS-KD": (6.24, 0.88, 56.56),
        "Tf-KD-reg": (11.96, 1.05, 61.77),
        "PS-KD": (1.77, 0.76, 52.10),
    }  # PS-KD's README
    for method, (ece, nll, aurc) in expected.items():
        line = rows[method]
        assert line[header.index("alone: best-epoch ECE (%)")] == "3.00"  # ours, beside the published one
        assert re.fullmatch(rf"{ece:.2f} \[\d+\]†", line[header.index("published ECE (%), alone [note]")])
        assert re.fullmatch(rf"{nll:.3f} \[\d+\]†", line[header.index("published NLL (nats), alone [note]")])
        assert re.fullmatch(rf"{aurc:.2f} \[\d+\]†", line[header.index("published AURC (×10³), alone [note]")])
    assert "ECE with 10 equal-width confidence bins (ours: 15)" in table


def test_published_combinations_with_tffd_are_like_for_like_under_their_own_protocol(report):
    out, _ = report
    resnet32 = out.split("#### resnet32 on cifar100")[1].split("####")[0]
    assert "Not Self-KD-Lib's CIFAR-100 protocol (" in resnet32
    assert "like-for-like only with the numbers published under these runs' own protocol" in resnet32
    rows = {line.split("|")[1].strip(): line for line in resnet32.splitlines() if line.startswith("| ")}
    assert re.search(r"\| 73\.22 \(CE 71\.14\) \[\d+\]; 73\.20 \(CE 71\.14\) \[\d+\] \| -2\.72 \|", rows["LS"])
    assert re.search(r"\| 73\.01 \(CE 71\.14\) \[\d+\] \| -2\.51 \|", rows["Cutout"])
    assert re.search(r"\| 73\.17 \(CE 71\.14\) \[\d+\] \| -2\.67 \|", rows["AutoAug"])
    assert "with no config here (references): Tf-FD + Dropout 72.86 (CE 71.14) [" in resnet32
    mobilenetv2 = out.split("#### mobilenetv2_imagenet on imagenet")[1].split("####")[0]
    assert "like-for-like only with the numbers published under these runs' own protocol" in mobilenetv2
    assert re.search(
        r"\| USKD \| 70\.00 \| 70\.50 \| – \| – \| – \| 72\.41 \(CE 71\.86\) \[\d+\] \| -1\.91 \|", mobilenetv2
    )


def test_a_tffd_row_under_the_released_protocol_marks_the_ijcnn_number_not_like_for_like(tmp_path):
    fake_run(
        tmp_path / "resnet20_tffd_released" / "seed0", "configs/cifar100/resnet20_tffd_released.yaml", [], 70.0, 70.5
    )
    out = run_main(collect_results.main, [str(tmp_path)], check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith("| resnet20 | Tf-FD |"))
    assert re.search(r"\| 70\.56 \[\d+\]† \|", row) and "| released code, README λ: batch 128" in row, row
