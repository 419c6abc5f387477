"""The CIFAR-100 top-1 accuracies (%) the Tf-FD paper reports (ECCV 2022 poster; docs/METHOD.md).

The baseline and KD numbers are those of the CIFAR-100 KD benchmark the poster reuses; the teachers'
own accuracies are that benchmark's too. The paper does not say whether they are last- or best-epoch
accuracies, so collect_results.py compares both of ours with them.
"""
from __future__ import annotations

BASELINE, TFFD, KD, KD_TFFD = "Baseline", "Tf-FD", "KD", "KD+Tf-FD"
METHODS = (BASELINE, TFFD, KD, KD_TFFD)  # the table's column order

# student -> (teacher of the KD rows, {method: top-1})
CIFAR100_STUDENTS: dict[str, tuple[str, dict[str, float]]] = {
    "resnet20": ("resnet110", {BASELINE: 69.06, TFFD: 70.62, KD: 70.67, KD_TFFD: 71.56}),
    "resnet32": ("resnet110", {BASELINE: 71.14, TFFD: 72.55, KD: 73.08, KD_TFFD: 73.68}),
    "wrn_16_2": ("wrn_40_2", {BASELINE: 73.26, TFFD: 74.33, KD: 74.92, KD_TFFD: 75.68}),
    "resnet8x4": ("resnet32x4", {BASELINE: 72.50, TFFD: 73.62, KD: 73.33, KD_TFFD: 75.65}),
    "vgg8": ("vgg13", {BASELINE: 70.36, TFFD: 71.62, KD: 72.98, KD_TFFD: 74.08}),
}
CIFAR100_TEACHERS: dict[str, float] = {"resnet110": 74.31, "wrn_40_2": 75.61, "resnet32x4": 79.42, "vgg13": 74.64}


def paper_cells() -> list[tuple[str, str, str | None, float]]:
    """Every reported CIFAR-100 number as (model, method, teacher or None, top-1), in table order:
    the teachers (trained with cross-entropy) first, then each student's row."""
    cells = [(teacher, BASELINE, None, acc) for teacher, acc in CIFAR100_TEACHERS.items()]
    for student, (teacher, row) in CIFAR100_STUDENTS.items():
        for method in METHODS:
            cells.append((student, method, teacher if method in (KD, KD_TFFD) else None, row[method]))
    return cells


def paper_top1(dataset: str, model: str, method: str, teacher: str | None) -> float | None:
    """The paper's number for this cell, or None if it reports none (other dataset, model, teacher)."""
    if dataset != "cifar100":
        return None
    for cell_model, cell_method, cell_teacher, acc in paper_cells():
        if (cell_model, cell_method, cell_teacher) == (model, method, teacher):
            return acc
    return None
