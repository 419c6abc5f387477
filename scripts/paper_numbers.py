"""Published CIFAR-100 top-1 accuracies (%) that collect_results.py shows beside our runs.

The Tf-FD paper's table (ECCV 2022 poster; docs/METHOD.md): its baseline and KD numbers are those of the
CIFAR-100 KD benchmark the poster reuses; the teachers' own accuracies are that benchmark's too. The paper
does not say whether they are last- or best-epoch accuracies, so collect_results.py compares both of ours
with them.

The self-distillation table (scripts/reproduce_selfkd.sh): Self-KD-Lib's README table and the methods'
own papers and repositories, each number with its source, backbone and protocol. Where a source reports
an error rate, the top-1 is written as 100 - that error.
"""
from __future__ import annotations

from dataclasses import dataclass

TFFD_PAPER = ("Tf-FD paper (ECCV 2022), CIFAR-100 table (its baseline, teacher and KD numbers: those of the KD "
              "benchmark it reuses)")
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


# ---------------------------------------------------------------- the self-distillation table
# A run's row name, from its loss terms (other than ce and tffd) and batch transforms; also the row order.
SELFKD_NAMES: dict[str, str] = {
    "ce": "CE", "ddgsd": "DDGSD", "dks": "DKS", "sad": "SAD", "byot": "BYOT", "tf_kd_reg": "Tf-KD-reg",
    "cs_kd": "CS-KD", "frskd": "FRSKD", "ps_kd": "PS-KD", "bake": "BAKE", "mixskd": "MixSKD", "dlb": "DLB",
    "uskd": "USKD", "zipf_ls": "Zipf-LS", "focal": "Focal", "max_entropy": "MaxEnt",
    "cutout": "Cutout", "random_erase": "RandErase", "mixup": "Mixup", "cutmix": "CutMix", "autoaugment": "AutoAug",
}


@dataclass(frozen=True)
class Published:
    """One published top-1 of a method, alone (SELFKD_PUBLISHED) or + Tf-FD (SELFKD_PUBLISHED_TFFD)."""
    top1: float
    source: str               # where it is printed, with the backbone, the protocol and which accuracy
    backbone: str             # as the source names it
    model: str | None         # our model of the same architecture, if we have one
    selfkd_protocol: bool     # trained with our configs' protocol for its dataset (collect_results.PROTOCOLS):
                              # Self-KD-Lib's on CIFAR-100, the standard 100-epoch recipe on ImageNet
    baseline: float | None = None  # the same source's CE number under the same protocol, if it gives one
    dataset: str = "cifar100"


SELFKD_LIB = ("Self-KD-Lib README (winycg/Self-KD-Lib), CIFAR-100 table: PreAct ResNet-18, best epoch, "
              "its 200-epoch protocol (the one our configs follow)")
TF_KD_REPO = ("Tf-KD repository figures (yuanli2333/Teacher-free-Knowledge-Distillation): ResNet18 "
              "(post-activation, the architecture of our cifar_resnet18), its own protocol: 200 epochs, "
              "1-epoch warm-up, x0.2 at 60/120/160, RandomRotation(15)")
PS_KD_README = ("PS-KD README (lgcnsai/PS-KD-Pytorch): PreAct ResNet-18, its own protocol: 300 epochs, "
                "x0.1 at 150/225; top-1 = 100 - the error it reports (CE 24.18, PS-KD 20.82)")
PS_KD_README_CS_KD = ("PS-KD README (lgcnsai/PS-KD-Pytorch), its re-run of CS-KD: PreAct ResNet-18, "
                      "protocol not given; top-1 = 100 - the error it reports (21.30)")
CUTOUT_PAPER = ("Cutout paper (DeVries and Taylor, 2017; uoguelph-mlrg/Cutout): ResNet-18, its own protocol; "
                "top-1 = 100 - the error it reports (22.46 -> 21.96)")
CUTMIX_PAPER = ("CutMix (Yun et al., ICCV 2019; clovaai/CutMix-PyTorch): PyramidNet-200, its own protocol; "
                "top-1 = 100 - the error it reports (16.45 -> 14.23)")
BYOT_PAPER = ("BYOT paper (Zhang et al., ICCV 2019) as quoted by the luanyunteng/pytorch-be-your-own-teacher "
              "README: ResNet18, the deepest classifier (4/4)")
SELFKD_LIB_FRSKD = SELFKD_LIB + "; 77.71 before its commit cdb5c8d"
BAKE_PAPER = ("BAKE (Ge et al., 2021; yxgeee/BAKE small_scale): PreAct ResNet-18, its own protocol: batch 32 anchors "
              "x 4 same-class images, wd 1e-4, /10 at 50% and 75%; top-1 = 100 - the error it reports (21.28)")
ZIPF_REPO = ("Zipf's LS README (megvii-research/zipfls): PreAct ResNet-18, its own protocol: 200 epochs, wd 1e-4, "
             "/10 at 100/150; mean of its runs (77.38 +- 0.32)")
BYOT_REPO = ("luanyunteng/pytorch-be-your-own-teacher README, its own run: ResNet18 (post-activation), the "
             "deepest classifier (4/4), its own protocol: 200 epochs, /10 at 75/130/180")

PREACT_18 = "PreAct ResNet-18"
SELFKD_PUBLISHED: dict[str, tuple[Published, ...]] = {
    "CE": (Published(76.24, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "Tf-KD-reg": (Published(76.61, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
                  Published(77.36, TF_KD_REPO, "ResNet18", "cifar_resnet18", False, baseline=75.87)),
    "CS-KD": (Published(78.66, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
              Published(round(100 - 21.30, 2), PS_KD_README_CS_KD, PREACT_18, "preact_resnet18", False)),
    "PS-KD": (Published(79.31, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
              Published(round(100 - 20.82, 2), PS_KD_README, PREACT_18, "preact_resnet18", False,
                        baseline=round(100 - 24.18, 2))),
    "BYOT": (Published(77.88, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
             Published(78.64, BYOT_PAPER, "ResNet18", None, False),
             Published(78.73, BYOT_REPO, "ResNet18", "cifar_resnet18", False)),
    "Mixup": (Published(78.68, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "CutMix": (Published(80.17, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
               Published(round(100 - 14.23, 2), CUTMIX_PAPER, "PyramidNet-200", None, False,
                         baseline=round(100 - 16.45, 2))),
    "Cutout": (Published(76.66, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
               Published(round(100 - 21.96, 2), CUTOUT_PAPER, "ResNet-18", None, False,
                         baseline=round(100 - 22.46, 2))),
    "DDGSD": (Published(76.61, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "DKS": (Published(78.64, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "SAD": (Published(76.40, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "FRSKD": (Published(76.60, SELFKD_LIB_FRSKD, PREACT_18, "preact_resnet18", True),),
    "BAKE": (Published(76.93, SELFKD_LIB, PREACT_18, "preact_resnet18", True),
             Published(round(100 - 21.28, 2), BAKE_PAPER, PREACT_18, "preact_resnet18", False)),
    "MixSKD": (Published(80.32, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "Zipf-LS": (Published(77.38, ZIPF_REPO, PREACT_18, "preact_resnet18", False, baseline=75.51),),
    "Focal": (Published(76.19, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "MaxEnt": (Published(76.50, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "RandErase": (Published(76.75, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
    "AutoAug": (Published(77.97, SELFKD_LIB, PREACT_18, "preact_resnet18", True),),
}  # none for Tf-FD, DLB or USKD on CIFAR-100 at these backbones; none for any method + Tf-FD


# ---------------------------------------------------------------- ImageNet (configs/imagenet/resnet18_*.yaml)
IMAGENET_RECIPE = "the standard 100-epoch recipe (batch 256, lr 0.1, /10 at 30/60/90, wd 1e-4)"
TFFD_IJCNN = ("Tf-FD, IJCNN version (docs/METHOD.md): ImageNet ResNet-18, " + IMAGENET_RECIPE + "; the ECCV paper "
              "reports +0.91 over its own baseline, without the absolute numbers")
USKD_REPO = ("USKD (Yang et al., ICCV 2023; yzd-v/cls_KD nkd.md): ImageNet ResNet-18 in mmcls, " + IMAGENET_RECIPE +
             " (res18_sd_img.py)")
IMAGENET_PUBLISHED: dict[str, tuple[Published, ...]] = {
    "CE": (Published(69.75, TFFD_IJCNN, "ResNet-18", "resnet18", True, dataset="imagenet"),
           Published(69.90, USKD_REPO, "ResNet-18", "resnet18", True, dataset="imagenet")),
    "USKD": (Published(70.79, USKD_REPO, "ResNet-18", "resnet18", True, baseline=69.90, dataset="imagenet"),),
}  # none for CS-KD or PS-KD with ResNet-18 (PS-KD's ImageNet number is ResNet-152's)
SELFKD_PUBLISHED_TFFD: dict[str, tuple[Published, ...]] = {  # a method + Tf-FD: only CE + Tf-FD, i.e. Tf-FD
    "CE": (Published(70.55, TFFD_IJCNN, "ResNet-18", "resnet18", True, baseline=69.75, dataset="imagenet"),),
}


def selfkd_published(method: str, dataset: str = "cifar100", with_tffd: bool = False) -> tuple[Published, ...]:
    """The published numbers on ``dataset`` of a self-KD row (its name, as SELFKD_NAMES gives it), alone or
    + Tf-FD, or ()."""
    if with_tffd:
        numbers = SELFKD_PUBLISHED_TFFD.get(method, ())
    else:
        numbers = SELFKD_PUBLISHED.get(method, ()) + IMAGENET_PUBLISHED.get(method, ())
    return tuple(number for number in numbers if number.dataset == dataset)
