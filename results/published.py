"""Published top-1 accuracies (%), and calibration numbers where a source gives them, that the tables show
beside our runs (each number's source string: results/sources.py).

The Tf-FD paper's table (ECCV 2022 poster; docs/METHOD.md): its baseline and KD numbers are those of the
CIFAR-100 KD benchmark the poster reuses; the teachers' own accuracies are that benchmark's too. The paper
does not say whether they are last- or best-epoch accuracies, so the tables compare both of ours with them.

The self-distillation table (scripts/reproduce_selfkd.sh): Self-KD-Lib's README table and the methods'
own papers and repositories, each number with its source, backbone and protocol. Where a source reports
an error rate, the top-1 is written as 100 - that error.

Tf-FD's IJCNN 2022 version (TFD) reports its own CIFAR-100 and ImageNet tables under other protocols: its
Tf-FD and KD + Tf-FD cells are shown beside the paper table's rows (IJCNN_TABLE), its Tf-FD combined with
label smoothing (TFD†), Cutout and AutoAugment in the self-distillation tables (a method + Tf-FD), and what
no config here can run (Tf-FD + Dropout, Tf-FD + CRD, ESKD, ...) as references (REFERENCES).
"""

from __future__ import annotations

from dataclasses import dataclass

from results.methods import BASELINE, KD, KD_TFFD, METHODS, TFFD
from results.sources import (
    BAKE_PAPER,
    BYOT_PAPER,
    BYOT_REPO,
    CRD_README,
    CUTMIX_PAPER,
    CUTOUT_PAPER,
    IJCNN_ABLATION,
    IJCNN_BOTH,
    IJCNN_FD,
    IJCNN_LS,
    IJCNN_OTHER,
    PS_KD_README,
    PS_KD_README_CS_KD,
    PS_KD_README_OTHERS,
    SELFKD_LIB,
    SELFKD_LIB_FRSKD,
    TF_KD_REPO,
    TFFD_IJCNN,
    TFFD_PAPER,
    USKD_MV1,
    USKD_MV2,
    USKD_R50,
    USKD_REPO,
    ZIPF_REPO,
)

# ---------------------------------------------------------------- the Tf-FD paper's table
# student -> (teacher of the KD rows, {method: top-1}); a method the source does not report is left out
CIFAR100_STUDENTS: dict[str, tuple[str, dict[str, float]]] = {
    "resnet20": ("resnet110", {BASELINE: 69.06, TFFD: 70.62, KD: 70.67, KD_TFFD: 71.56}),
    "resnet32": ("resnet110", {BASELINE: 71.14, TFFD: 72.55, KD: 73.08, KD_TFFD: 73.68}),
    "wrn_16_2": ("wrn_40_2", {BASELINE: 73.26, TFFD: 74.33, KD: 74.92, KD_TFFD: 75.68}),
    "resnet8x4": ("resnet32x4", {BASELINE: 72.50, TFFD: 73.62, KD: 73.33, KD_TFFD: 75.65}),
    "vgg8": ("vgg13", {BASELINE: 70.36, TFFD: 71.62, KD: 72.98, KD_TFFD: 74.08}),
    "wrn_40_1": ("wrn_40_2", {BASELINE: 71.98, KD: 73.54}),  # CRD_README's; Tf-FD's are the IJCNN version's only
}
CIFAR100_TEACHERS: dict[str, float] = {"resnet110": 74.31, "wrn_40_2": 75.61, "resnet32x4": 79.42, "vgg13": 74.64}
STUDENT_SOURCES = {"wrn_40_1": CRD_README}  # students whose cells come from another source than TFFD_PAPER


def paper_cells() -> list[tuple[str, str, str | None, float]]:
    """Every reported CIFAR-100 number as (model, method, teacher or None, top-1), in table order:
    the teachers (trained with cross-entropy) first, then each student's row."""
    cells = [(teacher, BASELINE, None, acc) for teacher, acc in CIFAR100_TEACHERS.items()]
    for student, (teacher, row) in CIFAR100_STUDENTS.items():
        for method in METHODS:
            if method in row:
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


def paper_source(model: str) -> str:
    """Where the paper column's numbers of ``model``'s row come from."""
    return STUDENT_SOURCES.get(model, TFFD_PAPER)


@dataclass(frozen=True)
class Published:
    """One published top-1 of a method, alone (SELFKD_PUBLISHED) or + Tf-FD (SELFKD_PUBLISHED_TFFD)."""

    top1: float
    source: str  # where it is printed, with the backbone, the protocol and which accuracy
    backbone: str  # as the source names it
    model: str | None  # our model of the same architecture, if we have one
    selfkd_protocol: bool  # trained with our configs' protocol for its dataset (protocols.SELFKD_PROTOCOLS):
    # Self-KD-Lib's on CIFAR-100, the standard 100-epoch recipe on ImageNet
    baseline: float | None = None  # the same source's CE number under the same protocol, if it gives one
    dataset: str = "cifar100"
    schedule: str | None = None  # configs/_base_/<schedule>: the source's protocol where it is not our
    # self-KD one (selfkd_protocol False); runs that follow it are like-for-like
    nll: float | None = None  # the source's calibration numbers, where it gives them (NLL in nats,
    ece: float | None = None  # ECE in %, AURC x 10^3; its source string says how it measures them)
    aurc: float | None = None


# ---------------------------------------------------------------- the self-distillation table
TFFD_PAPER_PROTOCOL = "protocols/tffd_paper.yaml"  # IJCNN_CIFAR's protocol: CRD's, with its lambdas

PREACT_18 = "PreAct ResNet-18"
SELFKD_PUBLISHED: dict[str, tuple[Published, ...]] = {
    "CE": (
        Published(76.24, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
        Published(
            round(100 - 24.18, 2), PS_KD_README, PREACT_18, "preact_resnet18", False, nll=1.10, ece=11.84, aurc=67.65
        ),
    ),
    "Tf-KD-reg": (
        Published(76.61, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
        Published(77.36, TF_KD_REPO, "ResNet18", "cifar_resnet18", False, baseline=75.87),
        Published(
            round(100 - 22.88, 2),
            PS_KD_README_OTHERS,
            PREACT_18,
            "preact_resnet18",
            False,
            nll=1.05,
            ece=11.96,
            aurc=61.77,
        ),
    ),
    "CS-KD": (
        Published(78.66, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
        Published(
            round(100 - 21.30, 2),
            PS_KD_README_CS_KD,
            PREACT_18,
            "preact_resnet18",
            False,
            nll=0.88,
            ece=6.24,
            aurc=56.56,
        ),
    ),
    "PS-KD": (
        Published(79.31, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
        Published(
            round(100 - 20.82, 2),
            PS_KD_README,
            PREACT_18,
            "preact_resnet18",
            False,
            baseline=round(100 - 24.18, 2),
            nll=0.76,
            ece=1.77,
            aurc=52.10,
        ),
    ),
    "BYOT": (
        Published(77.88, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
        Published(78.64, BYOT_PAPER, "ResNet18", None, False),
        Published(78.73, BYOT_REPO, "ResNet18", "cifar_resnet18", False),
    ),
    "Mixup": (Published(78.68, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "CutMix": (
        Published(80.17, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
        Published(round(100 - 14.23, 2), CUTMIX_PAPER, "PyramidNet-200", None, False, baseline=round(100 - 16.45, 2)),
    ),
    "Cutout": (
        Published(76.66, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
        Published(round(100 - 21.96, 2), CUTOUT_PAPER, "ResNet-18", None, False, baseline=round(100 - 22.46, 2)),
    ),
    "DDGSD": (Published(76.61, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "DKS": (Published(78.64, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "SAD": (Published(76.40, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "FRSKD": (Published(76.60, SELFKD_LIB_FRSKD, PREACT_18, "preact_resnet18", True),),
    "BAKE": (
        Published(76.93, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
        Published(round(100 - 21.28, 2), BAKE_PAPER, PREACT_18, "preact_resnet18", False),
    ),
    "MixSKD": (Published(80.32, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "Zipf-LS": (Published(77.38, ZIPF_REPO, PREACT_18, "preact_resnet18", False, baseline=75.51),),
    "LS": (
        Published(78.72, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
        Published(
            round(100 - 20.94, 2),
            PS_KD_README_OTHERS,
            PREACT_18,
            "preact_resnet18",
            False,
            nll=0.98,
            ece=10.79,
            aurc=57.74,
        ),
    ),
    "Focal": (Published(76.19, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "MaxEnt": (Published(76.50, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "RandErase": (Published(76.75, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "AutoAug": (Published(77.97, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
}  # none for Tf-FD, DLB or USKD on CIFAR-100 at these backbones


# ---------------------------------------------------------------- ImageNet (configs/imagenet/)
MOBILENETV2_300E = "schedules/imagenet_mobilenetv2_300e.yaml"  # the schedule of USKD_MV2's protocol
IMAGENET_PUBLISHED: dict[str, tuple[Published, ...]] = {
    "CE": (
        Published(69.75, TFFD_IJCNN, "ResNet-18", "resnet18", True, dataset="imagenet"),
        Published(69.90, USKD_REPO, "ResNet-18", "resnet18", True, dataset="imagenet"),
        Published(76.55, USKD_R50, "ResNet-50", "resnet50", True, dataset="imagenet"),
        Published(69.21, USKD_MV1, "MobileNet", "mobilenetv1", True, dataset="imagenet"),
        Published(
            71.86, USKD_MV2, "MobileNetV2", "mobilenetv2_imagenet", False, dataset="imagenet", schedule=MOBILENETV2_300E
        ),
    ),
    "USKD": (
        Published(70.79, USKD_REPO, "ResNet-18", "resnet18", True, baseline=69.90, dataset="imagenet"),
        Published(77.07, USKD_R50, "ResNet-50", "resnet50", True, baseline=76.55, dataset="imagenet"),
        Published(70.38, USKD_MV1, "MobileNet", "mobilenetv1", True, baseline=69.21, dataset="imagenet"),
        Published(
            72.41,
            USKD_MV2,
            "MobileNetV2",
            "mobilenetv2_imagenet",
            False,
            baseline=71.86,
            dataset="imagenet",
            schedule=MOBILENETV2_300E,
        ),
    ),
    "FRSKD": (Published(70.17, TFFD_IJCNN, "ResNet-18", "resnet18", True, baseline=69.75, dataset="imagenet"),),
    "BYOT": (Published(69.84, TFFD_IJCNN, "ResNet-18", "resnet18", True, baseline=69.75, dataset="imagenet"),),
}  # none for CS-KD or PS-KD with ResNet-18 (PS-KD's ImageNet number is ResNet-152's)

# A method + Tf-FD; the CE row's + Tf-FD is Tf-FD alone. Only the IJCNN version combines Tf-FD with other methods.
SELFKD_PUBLISHED_TFFD: dict[str, tuple[Published, ...]] = {
    "CE": (Published(70.55, TFFD_IJCNN, "ResNet-18", "resnet18", True, baseline=69.75, dataset="imagenet"),),
    "LS": (
        Published(
            71.11, IJCNN_BOTH + IJCNN_LS, "ResNet20", "resnet20", False, baseline=69.06, schedule=TFFD_PAPER_PROTOCOL
        ),
        Published(
            73.22, IJCNN_BOTH + IJCNN_LS, "ResNet32", "resnet32", False, baseline=71.14, schedule=TFFD_PAPER_PROTOCOL
        ),
        Published(73.20, IJCNN_ABLATION, "ResNet32", "resnet32", False, baseline=71.14, schedule=TFFD_PAPER_PROTOCOL),
        Published(
            75.01, IJCNN_FD + IJCNN_LS, "WRN-16-2", "wrn_16_2", False, baseline=73.26, schedule=TFFD_PAPER_PROTOCOL
        ),
        Published(
            75.05, IJCNN_OTHER + IJCNN_LS, "WRN-16-2", "wrn_16_2", False, baseline=73.26, schedule=TFFD_PAPER_PROTOCOL
        ),
        Published(
            74.02, IJCNN_BOTH + IJCNN_LS, "WRN-40-1", "wrn_40_1", False, baseline=71.98, schedule=TFFD_PAPER_PROTOCOL
        ),
        Published(70.66, TFFD_IJCNN + IJCNN_LS, "ResNet-18", "resnet18", True, baseline=69.75, dataset="imagenet"),
    ),
    "Cutout": (
        Published(73.01, IJCNN_ABLATION, "ResNet32", "resnet32", False, baseline=71.14, schedule=TFFD_PAPER_PROTOCOL),
    ),
    "AutoAug": (
        Published(73.17, IJCNN_ABLATION, "ResNet32", "resnet32", False, baseline=71.14, schedule=TFFD_PAPER_PROTOCOL),
    ),
}


def selfkd_published(method: str, dataset: str = "cifar100", with_tffd: bool = False) -> tuple[Published, ...]:
    """The published numbers on ``dataset`` of a self-KD row (its name, as SELFKD_NAMES gives it), alone or
    + Tf-FD, or ()."""
    if with_tffd:
        numbers = SELFKD_PUBLISHED_TFFD.get(method, ())
    else:
        numbers = SELFKD_PUBLISHED.get(method, ()) + IMAGENET_PUBLISHED.get(method, ())
    return tuple(number for number in numbers if number.dataset == dataset)


# ---------------------------------------------------------------- the IJCNN version beside the paper table's rows
# (dataset, model, method, teacher) -> numbers, shown beside the paper table's row of that cell
IJCNN_TABLE: dict[tuple[str, str, str, str | None], tuple[Published, ...]] = {
    ("cifar100", "resnet20", TFFD, None): (
        Published(70.56, IJCNN_BOTH, "ResNet20", "resnet20", False, schedule=TFFD_PAPER_PROTOCOL),
    ),
    ("cifar100", "resnet32", TFFD, None): (
        Published(72.73, IJCNN_BOTH, "ResNet32", "resnet32", False, schedule=TFFD_PAPER_PROTOCOL),
        Published(72.73, IJCNN_ABLATION, "ResNet32", "resnet32", False, schedule=TFFD_PAPER_PROTOCOL),
    ),
    ("cifar100", "wrn_16_2", TFFD, None): (
        Published(74.39, IJCNN_FD, "WRN-16-2", "wrn_16_2", False, schedule=TFFD_PAPER_PROTOCOL),
        Published(74.49, IJCNN_OTHER, "WRN-16-2", "wrn_16_2", False, schedule=TFFD_PAPER_PROTOCOL),
    ),
    ("cifar100", "wrn_40_1", TFFD, None): (
        Published(73.08, IJCNN_FD, "WRN-40-1", "wrn_40_1", False, schedule=TFFD_PAPER_PROTOCOL),
        Published(73.09, IJCNN_OTHER, "WRN-40-1", "wrn_40_1", False, schedule=TFFD_PAPER_PROTOCOL),
    ),
    ("cifar100", "resnet20", KD_TFFD, "resnet110"): (
        Published(71.96, IJCNN_OTHER, "ResNet20", "resnet20", False, schedule=TFFD_PAPER_PROTOCOL),
    ),
    ("cifar100", "resnet32", KD_TFFD, "resnet110"): (
        Published(73.88, IJCNN_OTHER, "ResNet32", "resnet32", False, schedule=TFFD_PAPER_PROTOCOL),
        Published(73.88, IJCNN_ABLATION, "ResNet32", "resnet32", False, schedule=TFFD_PAPER_PROTOCOL),
    ),
    ("cifar100", "wrn_16_2", KD_TFFD, "wrn_40_2"): (
        Published(75.68, IJCNN_OTHER, "WRN-16-2", "wrn_16_2", False, schedule=TFFD_PAPER_PROTOCOL),
    ),
    ("cifar100", "wrn_40_1", KD_TFFD, "wrn_40_2"): (
        Published(74.46, IJCNN_OTHER, "WRN-40-1", "wrn_40_1", False, schedule=TFFD_PAPER_PROTOCOL),
    ),
    ("imagenet", "resnet18", KD, "resnet34"): (
        Published(70.66, TFFD_IJCNN, "ResNet-18", "resnet18", True, baseline=69.75, dataset="imagenet"),
    ),
    ("imagenet", "resnet34", BASELINE, None): (
        Published(73.40, TFFD_IJCNN, "ResNet-34", "resnet34", True, dataset="imagenet"),
    ),
}


def ijcnn_published(dataset: str, model: str, method: str, teacher: str | None) -> tuple[Published, ...]:
    """The IJCNN version's numbers of a paper-table cell, or ()."""
    return IJCNN_TABLE.get((dataset, model, method, teacher), ())


# ---------------------------------------------------------------- references: what no config here runs
@dataclass(frozen=True)
class Reference:
    """A published number of a method this codebase has no config for, shown under the tables of its backbone."""

    label: str
    number: Published


REFERENCES: tuple[Reference, ...] = (
    Reference(
        "Tf-FD + Dropout",
        Published(72.86, IJCNN_ABLATION, "ResNet32", "resnet32", False, baseline=71.14, schedule=TFFD_PAPER_PROTOCOL),
    ),
    *(
        Reference(
            f"Tf-FD + CRD (teacher {teacher})",
            Published(top1, IJCNN_OTHER, backbone, model, False, schedule=TFFD_PAPER_PROTOCOL),
        )
        for model, backbone, teacher, top1 in (
            ("resnet20", "ResNet20", "resnet110", 72.08),
            ("resnet32", "ResNet32", "resnet110", 73.96),
            ("wrn_16_2", "WRN-16-2", "wrn_40_2", 75.85),
            ("wrn_40_1", "WRN-40-1", "wrn_40_2", 74.76),
        )
    ),
    *(
        Reference(label, Published(top1, TFFD_IJCNN, "ResNet-18", "resnet18", True, baseline=69.75, dataset="imagenet"))
        for label, top1 in (("ESKD (teacher ResNet-34)", 70.89), ("ATKD (teacher ResNet-34)", 70.78), ("ONE", 70.55))
    ),
    *(
        Reference(label, Published(top1, SELFKD_LIB, PREACT_18, "preact_resnet18", True))
        for label, top1 in (
            ("Virtual Softmax", 78.54),
            ("RandAugment", 76.86),
            ("AugMix", 76.22),
            ("TrivialAugment", 76.03),
        )
    ),
)


def references(dataset: str, model: str) -> tuple[Reference, ...]:
    return tuple(
        reference for reference in REFERENCES if (reference.number.dataset, reference.number.model) == (dataset, model)
    )
