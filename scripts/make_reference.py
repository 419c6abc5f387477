"""Write docs/REFERENCE.md, the reference of every registered part and every config option, from the code alone:
the registries (loss terms, batch plans, batch transforms, augmentations, models, datasets), the first sentence of
each one's docstring, and the option declarations (type, default, range, help) of the config schema.

    python scripts/make_reference.py           # rewrite docs/REFERENCE.md
    python scripts/make_reference.py --check   # exit 1 if docs/REFERENCE.md is not what the code gives

tests/test_reference.py fails when the file is stale: regenerate it after changing a docstring or an option.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from core.typed_config import describe
from data.augmentations import AUGMENTATIONS
from data.batch_transforms import BATCH_TRANSFORMS
from data.plans import PLANS, build_plan
from data.registry import DATASETS
from engine.checkpoint import atomic_write
from engine.config import BatchConfig, ExperimentConfig
from losses import LOSSES
from models import MODELS

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "REFERENCE.md"
SECTIONS = {
    "model": "Model",
    "data": "Data",
    "train": "Training",
    "loss": "Loss terms",
    "batch": "Batch",
    "teacher": "Teacher",
    "seed": "Seed",
}


def first_sentence(obj) -> str:
    """The first sentence of ``obj``'s docstring (a module, a class, a function), on one line."""
    doc = vars(obj).get("__doc__") if isinstance(obj, type) else obj.__doc__  # a class's own, not inherited
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]


def cell(text) -> str:
    """``text`` as one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]


def module_of(obj):
    return sys.modules[obj.__module__]


def registries() -> list[str]:
    lines = [
        "## Loss terms (`loss.terms`)",
        "",
        "Each term's options are `loss.<term>.<option>` (below); a term that needs a batch plan reads its batch.",
        "",
    ]
    lines += table(
        ["term", "what it is", "batch plan", "teacher"],
        [
            [
                f"`{name}`",
                first_sentence(module_of(entry.term)),
                entry.term.batch_plan or "any",
                "yes" if entry.term.requires_teacher else "",
            ]
            for name, entry in sorted(LOSSES.items())
        ],
    )
    lines += [
        "",
        "## Batch plans (`batch.plan`)",
        "",
        "How each step makes its batch (docs/ADDING_A_METHOD.md); `auto` picks the one the terms need.",
        "",
    ]
    plans = {name: build_plan(name, BatchConfig()) for name in sorted(PLANS)}  # with their default options
    lines += table(
        ["plan", "what it makes", "extra samples per anchor (default)", "refuses"],
        [
            [
                f"`{name}`",
                first_sentence(module_of(type(plan))),
                plan.extra_samples,
                ", ".join(plan.refuses_batch_transforms),
            ]
            for name, plan in plans.items()
        ],
    )
    lines += ["", "## Batch transforms (`batch.transforms`)", ""]
    lines += table(
        ["transform", "what it does"],
        [[f"`{name}`", first_sentence(transform)] for name, (transform, _) in sorted(BATCH_TRANSFORMS.items())],
    )
    lines += ["", "## Augmentations (`data.augment`)", ""]
    lines += table(
        ["augmentation", "what it does"],
        [[f"`{name}`", first_sentence(builder)] for name, (builder, *_) in sorted(AUGMENTATIONS.items())],
    )
    lines += [
        "",
        "## Models (`model.name`) and datasets (`data.name`)",
        "",
        "Models: " + ", ".join(f"`{name}`" for name in sorted(MODELS)) + ", and `timm/<architecture>` for any "
        "timm model (docs/MODELS.md).",
        "",
        "Datasets: " + ", ".join(f"`{name}`" for name in sorted(DATASETS)) + ".",
    ]
    return lines


def options() -> list[str]:
    lines = [
        "",
        "## Every config option",
        "",
        "`python train.py --help-config` prints the same; set any of them in YAML or as `KEY=VALUE`.",
        "",
    ]
    rows = describe(ExperimentConfig)
    for section, title in SECTIONS.items():
        mine = [row for row in rows if row[0] == section or row[0].startswith(section + ".")]
        lines += (
            [f"### {title}", ""]
            + table(
                ["key", "type", "default", "meaning"],
                [[f"`{key}`", kind, f"`{default}`", help_text] for key, kind, default, help_text in mine],
            )
            + [""]
        )
    return lines


def render() -> str:
    header = [
        "# Reference",
        "",
        "Generated from the code by `python scripts/make_reference.py`; do not edit by hand.",
        "",
    ]
    return "\n".join(header + registries() + options()).rstrip("\n") + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/REFERENCE.md is stale, write nothing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        stale = not REFERENCE.is_file() or REFERENCE.read_text() != text
        print(f"{REFERENCE} is {'stale: run python scripts/make_reference.py' if stale else 'up to date'}")
        return int(stale)
    atomic_write(REFERENCE, lambda handle: handle.write(text.encode()))
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
