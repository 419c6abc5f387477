"""Recognising a run's method from its resolved config: the Tf-FD paper table's methods (from loss.terms:
Baseline, Tf-FD, KD, KD+Tf-FD), and a self-distillation run's place in the method x {alone, + Tf-FD} tables
(its loss terms, CE's label smoothing, augmentations and batch transforms: [ce] with transforms [mixup] is
"Mixup"; [ce, cs_kd, tffd] is "CS-KD" + Tf-FD; [ce, tffd] with label smoothing is "LS" + Tf-FD)."""

from __future__ import annotations

from dataclasses import dataclass

from data.augmentations import AUGMENTATIONS

BASELINE, TFFD, KD, KD_TFFD = "Baseline", "Tf-FD", "KD", "KD+Tf-FD"
METHODS = (BASELINE, TFFD, KD, KD_TFFD)  # the table's column order

METHOD_OF_TERMS = {
    frozenset({"ce"}): BASELINE,
    frozenset({"ce", "tffd"}): TFFD,
    frozenset({"ce", "kd"}): KD,
    frozenset({"ce", "kd", "tffd"}): KD_TFFD,
}
# The self-KD literature's backbones: their CE and Tf-FD runs belong to the self-distillation table too.
CIFAR_RESNET18S = ("cifar_resnet18", "preact_resnet18")  # the self-KD literature's CIFAR backbone, in its two forms
SELFKD_BACKBONES = (*CIFAR_RESNET18S, "resnet18", "resnet50", "mobilenetv1", "mobilenetv2_imagenet")
# The keys that make a self-KD method: its loss terms, augmentations and batch transforms, and their options.
METHOD_KEYS = ("loss.", "batch.", "data.augment", *(f"data.{name}." for name in AUGMENTATIONS))

# A run's row name, from its loss terms (other than ce and tffd), CE's label smoothing, augmentations and batch
# transforms; also the row order.
SELFKD_NAMES: dict[str, str] = {
    "ce": "CE",
    "ddgsd": "DDGSD",
    "dks": "DKS",
    "sad": "SAD",
    "byot": "BYOT",
    "tf_kd_reg": "Tf-KD-reg",
    "cs_kd": "CS-KD",
    "frskd": "FRSKD",
    "ps_kd": "PS-KD",
    "bake": "BAKE",
    "mixskd": "MixSKD",
    "dlb": "DLB",
    "uskd": "USKD",
    "zipf_ls": "Zipf-LS",
    "label_smoothing": "LS",
    "focal": "Focal",
    "max_entropy": "MaxEnt",
    "cutout": "Cutout",
    "random_erase": "RandErase",
    "mixup": "Mixup",
    "cutmix": "CutMix",
    "autoaugment": "AutoAug",
}


@dataclass
class SelfKD:
    """Where a row sits in the self-distillation table."""

    name: str  # the table row: "CE", "CS-KD", "Mixup", ...
    parts: tuple  # the terms (other than ce and tffd) and batch transforms it is named after
    with_tffd: bool  # the + Tf-FD column
    method: dict  # the method's own identity keys: its terms without tffd, their and the transforms' options
    tffd: dict  # the Tf-FD options (empty alone)

    @property
    def label(self) -> str:
        """The row's method name elsewhere (sweep grids, CSV). CE + Tf-FD is Tf-FD."""
        if not self.with_tffd:
            return self.name
        return TFFD if self.name == SELFKD_NAMES["ce"] else f"{self.name}+{TFFD}"


def method_of(terms: list[str]) -> str:
    return METHOD_OF_TERMS.get(frozenset(terms), "+".join(terms))


def selfkd_of(config, settings: dict) -> SelfKD | None:
    """A teacher-free run's place in the self-distillation table, or None for a row of the Tf-FD paper's
    table (CE or Tf-FD, without label smoothing, augmentations or batch transforms, on a backbone other than
    the self-KD ones)."""
    terms = [term for term in config.loss.terms if term != "tffd"]
    smoothing = ("label_smoothing",) if "ce" in terms and config.loss.ce.label_smoothing > 0 else ()
    parts = (
        tuple(term for term in terms if term != "ce")
        + smoothing
        + tuple(config.data.augment)
        + tuple(config.batch.transforms)
    )
    if not parts and config.model.name not in SELFKD_BACKBONES and not config.model.name.startswith("timm/"):
        return None
    name = " + ".join(SELFKD_NAMES.get(part, part) for part in parts) or SELFKD_NAMES["ce"]
    method = {
        key: value
        for key, value in settings.items()
        if key.startswith(METHOD_KEYS) and key != "loss.terms" and not key.startswith("loss.tffd.")
    }
    method["loss.terms"] = str(sorted(terms))
    tffd = {key: value for key, value in settings.items() if key.startswith("loss.tffd.")}
    return SelfKD(name, parts, "tffd" in config.loss.terms, method, tffd)
