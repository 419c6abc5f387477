"""Turn run directories into tables beside the paper's numbers (text, Markdown, CSV or LaTeX) and figures.

    python scripts/collect_results.py [ROOT ...] [--format text|markdown|csv|latex] [--out FILE]
                                      [--metrics acc1,ece,nll,aurc] [--plots DIR]   (default ROOT: runs/cifar100)

Every directory under the roots that holds a config.yaml is a run. Runs whose resolved configs differ
only in the seed (and in paths or logging settings) form one row: mean ± sample std over the finished
seeds of both the last-epoch and the best-epoch test top-1, the paper's number (scripts/paper_numbers.py)
and our difference from it (WRN-40-1's: the KD benchmark's), the IJCNN version of Tf-FD's numbers of the
same cell, each with a note naming its source and † where the row does not follow its protocol, and the
protocol the runs were trained under (scripts/protocols.py: the Tf-FD paper's, the released code's, or
neither). Unfinished seeds are counted and marked, never averaged; the published cells that have no runs yet
are listed as missing. Rows of one model and method that differ in other keys (a sweep) are also shown as a
grid over those keys, e.g. lambda_intra x lambda_inter.

Self-distillation runs (scripts/reproduce_selfkd.sh: a self-KD loss term, CE's label smoothing, an
augmentation or a batch transform, or the self-KD literature's backbones: cifar_resnet18, preact_resnet18 and
the ImageNet resnet18, resnet50, mobilenetv1, mobilenetv2_imagenet) are shown apart, as a method x {alone,
+ Tf-FD} table per model and protocol: the method is recognised from loss.terms, loss.ce.label_smoothing,
data.augment and batch.transforms (terms [ce] with transforms [mixup] is "Mixup"; [ce, cs_kd, tffd] is
"CS-KD" + Tf-FD; [ce, tffd] with label smoothing is "LS" + Tf-FD), beside the published numbers of the method
alone and + Tf-FD (scripts/paper_numbers.py), each with a note naming its source, backbone and protocol and
saying whether it is like-for-like with the runs (same backbone, dataset and protocol: Self-KD-Lib's on
CIFAR-100, the 100-epoch recipe on ImageNet, or the source's own where a schedule here follows it). Under each
table: the published numbers of its backbone whose method has no runs there, and the references (methods
with no config here). Published cells without a number say "none"; the published calibration numbers (PS-KD's
README) sit beside ours with --metrics.

Formats: text (the default) writes the tables as compact Markdown pipe tables with their headings and notes;
markdown the same with aligned columns; csv every row of both tables and the sweeps as one flat CSV table
(unrounded numbers, empty where there is none); latex a table environment per table (booktabs, mean ± std as
$a \\pm b$, the best entry of each number column in bold: the highest top-1, the lowest ECE/NLL/AURC; ties
all bold). To stdout, or atomically to --out FILE (checked before anything is read); --csv FILE, the older
spelling, writes the CSV to FILE besides. --metrics adds last- and best-epoch columns of ECE (%), NLL
(nats) and AURC (x 10^3) to every table; the best epoch is the best-top-1 one, and runs from before these
metrics were recorded show – (empty in CSV). --plots DIR also draws the figures (scripts/plots.py).
"""
from __future__ import annotations

import argparse
import csv
import io
import itertools
import statistics
import sys
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from tabulate import DataRow, Line, TableFormat, tabulate

from paper_numbers import (BASELINE, IJCNN_TABLE, KD, KD_TFFD, METHODS, SELFKD_NAMES, TFFD, Published, ijcnn_published,
                           paper_cells, paper_source, paper_top1, references, selfkd_published)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import plots  # noqa: E402
from protocols import file_settings, tffd_protocol  # noqa: E402
from engine.checkpoint import atomic_write  # noqa: E402
from engine.output_paths import check_output_dir, check_output_file, kind_of  # noqa: E402
from engine.cli import exit_with  # noqa: E402
from engine.config import ExperimentConfig, config_from_dict  # noqa: E402
from core.errors import ConfigError, RunDirError, UserError  # noqa: E402
from engine.run_dir import CONFIG_FILE, RESUME_MAY_CHANGE, read_metrics  # noqa: E402
from engine.trainer import hparams_of  # noqa: E402
from core.typed_config import all_keys  # noqa: E402
from core.yaml_files import read_yaml  # noqa: E402
from data.augmentations import AUGMENTATIONS  # noqa: E402
from data.batch_transforms import BATCH_TRANSFORMS  # noqa: E402
from losses import LOSSES  # noqa: E402

METHOD_OF_TERMS = {
    frozenset({"ce"}): BASELINE, frozenset({"ce", "tffd"}): TFFD,
    frozenset({"ce", "kd"}): KD, frozenset({"ce", "kd", "tffd"}): KD_TFFD,
}
# Keys that do not change what a run computes, besides the seed the rows average over.
NOT_IDENTITY = {"seed"} | set(RESUME_MAY_CHANGE)
SCHEMA_ORDER = {key: index for index, key in enumerate(all_keys(ExperimentConfig))}
# The self-KD literature's backbones: their CE and Tf-FD runs belong to the self-distillation table too.
CIFAR_RESNET18S = ("cifar_resnet18", "preact_resnet18")  # the self-KD literature's CIFAR backbone, in its two forms
SELFKD_BACKBONES = (*CIFAR_RESNET18S, "resnet18", "resnet50", "mobilenetv1", "mobilenetv2_imagenet")
SCHEDULES = REPO / "configs" / "_base_" / "schedules"
# dataset -> (the schedule our self-KD configs follow there, its name): what "like-for-like" means
PROTOCOLS = {"cifar100": (SCHEDULES / "selfkd_200e.yaml", "Self-KD-Lib's CIFAR-100 protocol"),
             "imagenet": (SCHEDULES / "imagenet_100e.yaml", "the standard ImageNet 100-epoch recipe")}
# The keys that make a self-KD method: its loss terms, augmentations and batch transforms, and their options.
METHOD_KEYS = ("loss.", "batch.", "data.augment", *(f"data.{name}." for name in AUGMENTATIONS))
FORMATS = ("text", "markdown", "csv", "latex")
MAX, MIN = "max", "min"  # which entry of a column is the best one


@dataclass(frozen=True)
class Metric:
    """A number metrics.json holds as best_<key> and last_<key> (of the best-top-1 and the last epoch)."""
    key: str
    name: str
    unit: str
    digits: int
    better: str
    definition: str = ""

    @property
    def header(self) -> str:  # top-1's unit is in the caption
        return self.name if self.key == "acc1" else f"{self.name} ({self.unit})"

    @property
    def title(self) -> str:
        return f"{self.name} ({self.unit})"


ACC1 = Metric("acc1", "top-1", "%", 2, MAX)
METRICS = {metric.key: metric for metric in (
    ACC1,
    Metric("ece", "ECE", "%", 2, MIN, "expected calibration error, 15 equal-width confidence bins, in %"),
    Metric("nll", "NLL", "nats", 3, MIN, "mean negative log-likelihood of the true class, in nats"),
    Metric("aurc", "AURC", "×10³", 2, MIN,
           "area under the risk-coverage curve of the max-softmax confidence, ×10³"),
)}


@dataclass(frozen=True)
class Stat:
    """A number of a table: a mean over seeds and its sample std (None for one seed), or one value; None is –."""
    mean: float | None
    std: float | None = None
    digits: int = 2
    signed: bool = False
    note: str = ""  # text after the number, e.g. " (1/2 finished)"

    def number(self, pm: str = " ± ") -> str:
        value = f"{self.mean:+.{self.digits}f}" if self.signed else f"{self.mean:.{self.digits}f}"
        return value + (f"{pm}{self.std:.{self.digits}f}" if self.std is not None else "")

    def text(self) -> str:
        return "–" if self.mean is None else self.number() + self.note


@dataclass
class Table:
    """One table in no particular format: cells are text or Stat; ``better`` says, per column, whether its
    highest (MAX) or lowest (MIN) entry is the best one (None: no best)."""
    header: list[str]
    lines: list[list]
    better: list[str | None]
    title: str = ""                                      # a #### heading; the LaTeX caption
    before: list[str] = field(default_factory=list)     # paragraphs between the title and the table
    after: list[str] = field(default_factory=list)      # notes below the table, one a line

    def drop(self, column: int) -> None:
        for cells in (self.header, self.better, *self.lines):
            del cells[column]

    def numeric(self, column: int) -> bool:
        return any(isinstance(line[column], Stat) for line in self.lines)

    def best_cells(self) -> set[tuple[int, int]]:
        """(line, column) of the best entry of each column that has one, as shown (rounded); ties all."""
        best = set()
        for column, better in enumerate(self.better):
            shown = {index: round(line[column].mean, line[column].digits) for index, line in enumerate(self.lines)
                     if isinstance(line[column], Stat) and line[column].mean is not None}
            if better and shown:
                top = (max if better == MAX else min)(shown.values())
                best |= {(index, column) for index, value in shown.items() if value == top}
        return best


@dataclass
class Section:
    heading: str          # a ### heading ("" for none)
    intro: list[str]      # paragraphs
    tables: list[Table]


@dataclass
class Run:
    run_dir: Path
    seed: int
    metrics: dict | None

    @property
    def finished(self) -> bool:
        return bool(self.metrics and self.metrics.get("finished"))

    def progress(self) -> str:
        if not self.metrics:
            return f"seed {self.seed}: no epoch yet"
        return f"seed {self.seed}: epoch {self.metrics.get('epochs_done')}/{self.metrics.get('epochs_total')}"


@dataclass
class SelfKD:
    """Where a row sits in the self-distillation table."""
    name: str            # the table row: "CE", "CS-KD", "Mixup", ...
    parts: tuple         # the terms (other than ce and tffd) and batch transforms it is named after
    with_tffd: bool      # the + Tf-FD column
    method: dict         # the method's own identity keys: its terms without tffd, their and the transforms' options
    tffd: dict           # the Tf-FD options (empty alone)

    @property
    def label(self) -> str:
        """The row's method name elsewhere (sweep grids, CSV). CE + Tf-FD is Tf-FD."""
        if not self.with_tffd:
            return self.name
        return TFFD if self.name == SELFKD_NAMES["ce"] else f"{self.name}+{TFFD}"


@dataclass
class Row:
    """The runs of one config, over seeds (or a paper cell without runs: ``runs`` empty)."""
    dataset: str
    model: str
    method: str
    teacher: str | None
    settings: dict  # identity keys -> values (flat config without the seed)
    runs: list[Run] = field(default_factory=list)
    selfkd: SelfKD | None = None  # set for the self-distillation table's rows

    @property
    def family(self) -> tuple:
        return self.dataset, self.model, self.method, self.teacher

    def accuracies(self, key: str) -> list[float]:
        return [run.metrics[key] for run in self.runs if run.finished and run.metrics.get(key) is not None]

    def stats(self, key: str) -> tuple[float | None, float | None]:
        values = self.accuracies(key)
        if not values:
            return None, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None

    def stat(self, which: str, metric: Metric) -> Stat:
        """The mean ± std over the finished seeds of ``which`` ("last" or "best") epoch's ``metric``."""
        return Stat(*self.stats(f"{which}_{metric.key}"), digits=metric.digits)

    @property
    def paper(self) -> float | None:
        """The published number this row is compared with: the Tf-FD paper's cell, or for a self-KD row the
        like-for-like published number of its method, alone or + Tf-FD as the row is (None if there is none)."""
        if self.selfkd is not None:
            like = like_for_like(self)
            return like.top1 if like else None
        return paper_top1(self.dataset, self.model, self.method, self.teacher)

    @property
    def paper_source(self) -> str:
        if self.selfkd is not None:
            like = like_for_like(self)
            return like.source if like else ""
        return paper_source(self.model) if self.paper is not None else ""

    def teacher_acc1(self) -> float | None:
        values = [run.metrics["teacher_acc1"] for run in self.runs
                  if run.metrics and run.metrics.get("teacher_acc1") is not None]
        return statistics.fmean(values) if values else None

    def protocol(self) -> str:
        if not self.settings:
            return ""
        return (f"batch {self.settings['train.batch_size']}, lr {self.settings['train.lr']:g}, "
                f"{self.settings['train.epochs']} ep")

    def trained_under(self) -> str:
        """The protocol the runs follow: for the Tf-FD paper's table, one of protocols.TFFD_PROTOCOLS or
        "neither (...)"; for a self-KD table, its dataset's protocol (PROTOCOLS) or "not" that one."""
        if not self.settings:
            return ""
        if self.selfkd is None:
            return tffd_protocol(self.model, self.settings)
        name = protocol_of(self.dataset)[1]
        return f"not {name}" if protocol_deviations(self.dataset, self.settings) else name

    def status(self) -> str:
        if not self.runs:
            return "missing"
        done = sum(run.finished for run in self.runs)
        unfinished = [run.progress() for run in self.runs if not run.finished]
        return f"{done}/{len(self.runs)} finished" + (f"; {', '.join(unfinished)}" if unfinished else "")


def stat_of(row: Row | None, which: str, metric: Metric = ACC1) -> Stat:
    return row.stat(which, metric) if row is not None else Stat(None)


# ---------------------------------------------------------------- reading runs
def find_runs(roots: list[Path]) -> list[tuple[Path, object, dict | None]]:
    """(run dir, its typed resolved config, its metrics or None) for every run under ``roots``."""
    found = []
    for root in roots:
        for config_file in sorted(root.rglob(CONFIG_FILE)):
            run_dir = config_file.parent
            try:
                config = config_from_dict(read_yaml(config_file))  # the loader that bounds every config
            except UserError as error:
                print(f"warning: skipping {run_dir}: unreadable config.yaml ({error})", file=sys.stderr)
                continue
            try:
                metrics = read_metrics(run_dir)
            except UserError as error:
                print(f"warning: skipping {run_dir}: {error}", file=sys.stderr)
                continue
            found.append((run_dir, config, metrics))
    return found


def method_of(terms: list[str]) -> str:
    return METHOD_OF_TERMS.get(frozenset(terms), "+".join(terms))


def selfkd_of(config, settings: dict) -> SelfKD | None:
    """A teacher-free run's place in the self-distillation table, or None for a row of the Tf-FD paper's
    table (CE or Tf-FD, without label smoothing, augmentations or batch transforms, on a backbone other than
    the self-KD ones)."""
    terms = [term for term in config.loss.terms if term != "tffd"]
    smoothing = ("label_smoothing",) if "ce" in terms and config.loss.ce.label_smoothing > 0 else ()
    parts = (tuple(term for term in terms if term != "ce") + smoothing + tuple(config.data.augment)
             + tuple(config.batch.transforms))
    if not parts and config.model.name not in SELFKD_BACKBONES and not config.model.name.startswith("timm/"):
        return None
    name = " + ".join(SELFKD_NAMES.get(part, part) for part in parts) or SELFKD_NAMES["ce"]
    method = {key: value for key, value in settings.items()
              if key.startswith(METHOD_KEYS) and key != "loss.terms" and not key.startswith("loss.tffd.")}
    method["loss.terms"] = str(sorted(terms))
    tffd = {key: value for key, value in settings.items() if key.startswith("loss.tffd.")}
    return SelfKD(name, parts, "tffd" in config.loss.terms, method, tffd)


def identity(config) -> tuple[dict, bool]:
    """The flat config keys that decide what a run computes, and whether it uses a teacher. The options
    of inactive loss terms, augmentations and batch transforms, and of an unused teacher, are left out: they
    change nothing."""
    uses_teacher = any(LOSSES[name].term.requires_teacher for name in config.loss.terms if name in LOSSES)
    unused = tuple(f"loss.{name}." for name in LOSSES if name not in config.loss.terms)
    unused += tuple(f"batch.{name}." for name in BATCH_TRANSFORMS if name not in config.batch.transforms)
    unused += tuple(f"data.{name}." for name in AUGMENTATIONS if name not in config.data.augment)
    unused += () if uses_teacher else ("teacher.",)
    settings = {key: value for key, value in hparams_of(config).items()
                if key not in NOT_IDENTITY and not key.startswith(unused)}
    return settings, uses_teacher


def group_rows(found) -> list[Row]:
    rows: dict[tuple, Row] = {}
    for run_dir, config, metrics in found:
        settings, uses_teacher = identity(config)
        key = tuple(sorted(settings.items()))
        if key not in rows:
            selfkd = None if uses_teacher else selfkd_of(config, settings)
            method = selfkd.label if selfkd else method_of(config.loss.terms)
            rows[key] = Row(config.data.name, config.model.name, method,
                            config.teacher.model if uses_teacher else None, settings, selfkd=selfkd)
        rows[key].runs.append(Run(run_dir, config.seed, metrics))
    for row in rows.values():
        row.runs.sort(key=lambda run: (run.seed, str(run.run_dir)))
    return list(rows.values())


def add_missing_paper_cells(rows: list[Row]) -> list[Row]:
    """For each dataset of the paper table's rows, the published cells (the paper's on CIFAR-100, the IJCNN
    version's) that no row covers, as rows without runs."""
    datasets = {row.dataset for row in rows if row.selfkd is None}
    cells = [("cifar100", model, method, teacher) for model, method, teacher, _ in paper_cells()]
    covered = {row.family for row in rows}
    missing = [Row(*cell, {}) for cell in dict.fromkeys(cells + list(IJCNN_TABLE))
               if cell[0] in datasets and cell not in covered]
    return rows + missing


def table_order(rows: list[Row]) -> list[Row]:
    """Per dataset, the paper's order (teachers, then each student's rows in the order of METHODS), then the
    other models."""
    models = list(dict.fromkeys(model for model, *_ in paper_cells()))
    method_index = {method: index for index, method in enumerate(METHODS)}

    def key(row: Row):
        return (row.dataset, models.index(row.model) if row.model in models else len(models), row.model,
                method_index.get(row.method, len(METHODS)), row.method, row.teacher or "",
                describe(varying_settings(rows, row)))

    return sorted(rows, key=key)


def varying_keys(rows: list[Row]) -> list[str]:
    """The identity keys whose values differ among ``rows`` (rows of one family: a sweep's axes)."""
    return _varying([row.settings for row in rows])


def _varying(settings: list[dict]) -> list[str]:
    """The keys whose values differ among these flat settings, in schema order."""
    keys = sorted({key for one in settings for key in one},
                  key=lambda key: (SCHEMA_ORDER.get(key, len(SCHEMA_ORDER)), key))
    return [key for key in keys if len({one.get(key) for one in settings}) > 1]


def varying_settings(all_rows: list[Row], row: Row) -> dict:
    family = [other for other in all_rows if other.family == row.family and other.runs]
    return {key: row.settings.get(key) for key in varying_keys(family)} if row.runs else {}


# ---------------------------------------------------------------- the self-distillation table
@lru_cache(maxsize=1)
def protocol_of(dataset: str) -> tuple[Path, str]:
    """The protocol a self-KD table on ``dataset`` is held to: its own, else Self-KD-Lib's CIFAR-100 one."""
    return PROTOCOLS.get(dataset, PROTOCOLS["cifar100"])


def published_for(name: str, dataset: str, with_tffd: bool = False, model: str | None = None) -> tuple[Published, ...]:
    """The published numbers shown in a self-KD table on ``dataset``: the dataset's own, or CIFAR-100's for
    a dataset without a protocol here (as a reference, never like-for-like); with ``model``, only those of
    that backbone, of a backbone without a model here, or of the literature's CIFAR ResNet-18 (shown beside
    every CIFAR table)."""
    numbers = selfkd_published(name, dataset if dataset in PROTOCOLS else "cifar100", with_tffd)
    return tuple(number for number in numbers if model is None or number.model in (model, None, *CIFAR_RESNET18S))


def schedule_deviations(schedule: Path, settings: dict) -> list[str]:
    """How runs of these settings depart from a schedule file (empty: they follow it); a long list (a
    per-epoch decay's milestones, a string in the flat settings) by its ends."""
    def short(value) -> str:
        items = str(value).split(", ")
        return ", ".join([*items[:2], "...", items[-1]]) if len(items) > 6 else fmt_value(value)

    return [f"{key}={short(settings.get(key))}, not {short(value)}"
            for key, value in file_settings(schedule).items() if key in settings and settings[key] != value]


def protocol_deviations(dataset: str, settings: dict) -> list[str]:
    """How runs of these settings depart from the dataset's protocol (empty: they follow it)."""
    out = [] if dataset in PROTOCOLS else [f"dataset {dataset}, not cifar100"]
    return out + schedule_deviations(protocol_of(dataset)[0], settings)


def number_schedule(number: Published) -> Path | None:
    """The schedule file of the protocol ``number`` was trained under, where one of ours follows it."""
    if number.schedule:
        return SCHEDULES.parent / number.schedule
    return PROTOCOLS[number.dataset][0] if number.selfkd_protocol else None


def follows(number: Published, dataset: str, model: str, settings: dict) -> bool:
    """Runs of ``model`` on ``dataset`` with these settings are like-for-like with ``number``: same backbone,
    dataset and protocol."""
    schedule = number_schedule(number)
    return (number.model == model and number.dataset == dataset and schedule is not None
            and not schedule_deviations(schedule, settings))


def like_for_like(row: Row) -> Published | None:
    """The published number of the same method (alone or + Tf-FD), dataset, backbone and protocol as ``row``."""
    if row.selfkd is None:
        return None
    return next((published for published in published_for(row.selfkd.name, row.dataset, row.selfkd.with_tffd)
                 if follows(published, row.dataset, row.model, row.settings)), None)


def _context(row: Row) -> tuple:
    """What the rows of one self-KD table share: every identity key outside the method's (METHOD_KEYS)."""
    return tuple(sorted((key, value) for key, value in row.settings.items() if not key.startswith(METHOD_KEYS)))


@dataclass
class SelfKDContext:
    """The rows of one self-KD table: one dataset, model and protocol (the keys outside METHOD_KEYS)."""
    dataset: str
    model: str
    title: str               # "cifar_resnet18 on cifar100: batch 128, lr 0.1, 200 ep"
    deviations: list[str]    # how it departs from Self-KD-Lib's protocol (empty: it follows it)
    rows: list[Row]
    settings: dict           # the keys its rows share (those outside METHOD_KEYS)


def selfkd_contexts(rows: list[Row]) -> list[SelfKDContext]:
    contexts: dict[tuple, list[Row]] = {}
    for row in rows:
        contexts.setdefault((row.dataset, row.model, _context(row)), []).append(row)
    out = []
    for (dataset, model, context), members in sorted(contexts.items(), key=lambda item: str(item[0])):
        siblings = [dict(c) for d, m, c in contexts if (d, m) == (dataset, model)]
        shown = ("train.batch_size", "train.lr", "train.epochs")  # in the protocol string already
        differs = describe({key: dict(context).get(key) for key in _varying(siblings) if key not in shown})
        title = f"{model} on {dataset}: {members[0].protocol()}" + (f", {differs}" if differs else "")
        out.append(SelfKDContext(dataset, model, title, protocol_deviations(dataset, dict(context)), members,
                                 dict(context)))
    return out


def selfkd_tables(rows: list[Row], metrics: tuple[Metric, ...]) -> list[Table]:
    """One method x {alone, + Tf-FD} table per dataset, model and protocol."""
    tables = []
    for context in selfkd_contexts(rows):
        schedule, name = protocol_of(context.dataset)
        table, any_like = selfkd_table(context, metrics)
        if not context.deviations:
            protocol = f"{name[0].upper()}{name[1:]} ({schedule.relative_to(REPO)})."
        elif any_like:
            protocol = (f"Not {name} (" + "; ".join(context.deviations) + "): like-for-like only with the numbers "
                        "published under these runs' own protocol.")
        else:
            protocol = f"Not {name} (" + "; ".join(context.deviations) + "): no published number is like-for-like."
        table.title, table.before = context.title, [protocol]
        tables.append(table)
    return tables


def selfkd_pairs(rows: list[Row]) -> list[tuple[str, str, Row | None, Row | None]]:
    """The lines of one self-KD table, in order: (method name, its settings, the row alone, the row + Tf-FD)."""
    order = {part: index for index, part in enumerate(SELFKD_NAMES)}
    first = {row.selfkd.name: min((order.get(part, len(order)) for part in row.selfkd.parts), default=0)
             for row in rows}
    tffd_keys = _varying([row.selfkd.tffd for row in rows if row.selfkd.with_tffd])
    pairs = []
    for name in sorted(first, key=lambda name: (first[name], name)):
        members = [row for row in rows if row.selfkd.name == name]
        method_keys = _varying([row.selfkd.method for row in members])

        def method_of_row(row: Row) -> tuple:
            return tuple((key, row.selfkd.method.get(key)) for key in method_keys)

        def tffd_of_row(row: Row) -> tuple:
            return tuple((key, row.selfkd.tffd.get(key)) for key in tffd_keys)

        for method in sorted({method_of_row(row) for row in members}, key=str):
            same = [row for row in members if method_of_row(row) == method]
            alone = next((row for row in same if not row.selfkd.with_tffd), None)
            plus = [row for row in same if row.selfkd.with_tffd]
            for tffd in sorted({tffd_of_row(row) for row in plus}, key=str) or [()]:
                with_tffd = next((row for row in plus if tffd_of_row(row) == tffd), None)
                settings = "; ".join(filter(None, [describe(dict(method)),
                                                   f"Tf-FD {describe(dict(tffd))}" if tffd else ""]))
                pairs.append((name, settings, alone, with_tffd))
    return pairs


NONE = "none"  # a published-number cell without a number: the source gives none, not a zero


def selfkd_table(context: SelfKDContext, metrics: tuple[Metric, ...]) -> tuple[Table, bool]:
    """The table of one context, with its notes on the published numbers below it; and whether any of
    those numbers is like-for-like with its runs."""
    notes: dict[tuple, int] = {}
    pairs = selfkd_pairs(context.rows)
    lines = [_selfkd_line(name, settings, alone, with_tffd, context, notes, metrics)
             for name, settings, alone, with_tffd in pairs]
    published_metric = {metric: f"published {metric.header}, alone [note]" for metric in metrics}
    columns = [("method", None), ("settings", None), ("alone: last-epoch top-1", MAX),
               ("alone: best-epoch top-1", MAX), ("+ Tf-FD: last-epoch top-1", MAX),
               ("+ Tf-FD: best-epoch top-1", MAX), ("Δ best, + Tf-FD − alone", None),
               ("published top-1, alone [note]", None), ("Δ best, alone − like-for-like published", None),
               ("published top-1, + Tf-FD [note]", None), ("Δ best, + Tf-FD − like-for-like published", None),
               *(column for metric in metrics for column in (
                   *((f"{side}: {which}-epoch {metric.header}", metric.better) for side in ("alone", "+ Tf-FD")
                     for which in ("last", "best")), (published_metric[metric], None))),
               ("runs alone", None), ("runs + Tf-FD", None)]
    table = Table([header for header, _ in columns], lines, [better for _, better in columns])
    empty = [header for header in ("published top-1, + Tf-FD [note]", *published_metric.values())
             if all(line[table.header.index(header)] == NONE for line in lines)]
    if "published top-1, + Tf-FD [note]" in empty:  # a published method + Tf-FD is rare
        table.drop(table.header.index("Δ best, + Tf-FD − like-for-like published"))
    for header in empty:
        table.drop(table.header.index(header))
    if not any(line[1] for line in lines):
        table.drop(1)
    shown = {name for name, *_ in pairs}
    unshown = [(name if not plus else (TFFD if name == SELFKD_NAMES["ce"] else f"{name} + {TFFD}"), number)
               for name in dict.fromkeys(SELFKD_NAMES.values()) if name not in shown for plus in (False, True)
               for number in published_for(name, context.dataset, plus) if number.model == context.model]
    table.after += _labelled_numbers(f"Also published for {context.model} on {context.dataset}, without runs here",
                                     unshown, context, notes)
    table.after += _labelled_numbers(f"Published for {context.model} on {context.dataset} with no config here "
                                     "(references)", [(reference.label, reference.number) for reference in
                                                      references(context.dataset, context.model)], context, notes)
    for (source, _, _, verdict), index in notes.items():
        table.after.append(f"[{index}] {source}. {verdict}")
    return table, any(verdict.startswith("Like") for *_, verdict in notes)


def _verdict(number: Published, context: SelfKDContext) -> str:
    if follows(number, context.dataset, context.model, context.settings):
        return "Like-for-like with these runs: same backbone and protocol."
    reasons = ([] if number.model == context.model
               else [f"another backbone ({number.backbone}; these runs: {context.model})"])
    if number_schedule(number) is None:
        reasons.append("another protocol")
    elif number.model == context.model:
        reasons.append("these runs do not follow its protocol")
    return "† Not like-for-like: " + ", ".join(reasons) + "."


def _published_numbers(numbers, context: SelfKDContext, notes: dict, value=lambda number: number.top1,
                       digits: int = 2, with_baseline: bool = True) -> list[str]:
    """Each number as "value (CE baseline) [note]", † where not like-for-like (``notes``: filled in order)."""
    cells = []
    for number in numbers:
        if value(number) is None:
            continue
        verdict = _verdict(number, context)
        index = notes.setdefault((number.source, number.backbone, number.model, verdict), len(notes) + 1)
        baseline = f" (CE {number.baseline:.2f})" if with_baseline and number.baseline is not None else ""
        cells.append(f"{value(number):.{digits}f}{baseline} [{index}]" + ("†" if verdict.startswith("†") else ""))
    return cells


def _published_cell(numbers, context: SelfKDContext, notes: dict) -> str:
    return "; ".join(_published_numbers(numbers, context, notes)) or NONE


def _labelled_numbers(heading: str, labelled: list[tuple[str, Published]], context: SelfKDContext,
                      notes: dict) -> list[str]:
    """One note line listing labelled published numbers ("label 72.86 (CE 71.14) [3]†; ..."), or none."""
    items = [f"{label} {cell}" for label, number in labelled for cell in _published_numbers([number], context, notes)]
    return [f"{heading}: " + "; ".join(items) + "."] if items else []


def _selfkd_line(name: str, settings: str, alone: Row | None, with_tffd: Row | None, context: SelfKDContext,
                 notes: dict, metrics: tuple[Metric, ...]) -> list:
    published = [published_for(name, context.dataset, plus, context.model) for plus in (False, True)]
    cells = [_published_cell(numbers, context, notes) for numbers in published]
    like = like_for_like(alone) if alone else None
    like_tffd = like_for_like(with_tffd) if with_tffd else None
    alone_best, tffd_best = stat_of(alone, "best").mean, stat_of(with_tffd, "best").mean
    return [name, settings, *(stat_of(row, which) for row in (alone, with_tffd) for which in ("last", "best")),
            Stat(difference(tffd_best, alone_best), signed=True), cells[0],
            Stat(difference(alone_best, like.top1 if like else None), signed=True), cells[1],
            Stat(difference(tffd_best, like_tffd.top1 if like_tffd else None), signed=True),
            *(cell for metric in metrics for cell in (
                *(stat_of(row, which, metric) for row in (alone, with_tffd) for which in ("last", "best")),
                "; ".join(_published_numbers(published[0], context, notes, lambda number: getattr(number, metric.key),
                                             metric.digits, with_baseline=False)) or NONE)),
            alone.status() if alone else "–", with_tffd.status() if with_tffd else "–"]


# ---------------------------------------------------------------- the tables, in any format
def fmt_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(settings: dict) -> str:
    return ", ".join(f"{key}={fmt_value(value)}" for key, value in settings.items())


def difference(mean: float | None, paper: float | None) -> float | None:
    return None if mean is None or paper is None else mean - paper


IJCNN_COLUMN = "IJCNN version top-1 [note]"


def ijcnn_cell(row: Row, notes: dict) -> str:
    """The IJCNN version's numbers of the row's cell with their notes (``notes``: source -> index, filled in
    order); † where the row's runs do not follow that number's protocol (none marked on a row without runs)."""
    cells = []
    for number in ijcnn_published(row.dataset, row.model, row.method, row.teacher):
        index = notes.setdefault(number.source, len(notes) + 1)
        unlike = row.runs and not follows(number, row.dataset, row.model, row.settings)
        cells.append(f"{number.top1:.2f} [{index}]" + ("†" if unlike else ""))
    return "; ".join(cells) or NONE


def paper_references(dataset: str, model: str, notes: dict) -> str:
    """A note line on the published numbers of ``model`` that no config here runs, or ""."""
    items = [f"{reference.label} {reference.number.top1:.2f}"
             + (f" (CE {reference.number.baseline:.2f})" if reference.number.baseline is not None else "")
             + f" [{notes.setdefault(reference.number.source, len(notes) + 1)}]"
             for reference in references(dataset, model)]
    return f"Published for {model} on {dataset} with no config here (references): {'; '.join(items)}." if items else ""


def results_table(rows: list[Row], metrics: tuple[Metric, ...]) -> Table:
    columns = [("dataset", None), ("model", None), ("method", None), ("teacher (top-1)", None), ("protocol", None),
               ("settings", None), ("last-epoch top-1", MAX), ("best-epoch top-1", MAX), ("paper", None),
               ("Δ last", None), ("Δ best", None), (IJCNN_COLUMN, None),
               *((f"{which}-epoch {metric.header}", metric.better) for metric in metrics for which in ("last", "best")),
               ("runs", None)]
    lines, notes = [], {}
    for row in rows:
        last, best = row.stat("last", ACC1), row.stat("best", ACC1)
        teacher = row.teacher or ""
        if row.teacher and row.teacher_acc1() is not None:
            teacher += f" ({row.teacher_acc1():.2f})"
        protocol = f"{row.trained_under()}: {row.protocol()}" if row.settings else ""
        lines.append([row.dataset, row.model, row.method, teacher, protocol,
                      describe(varying_settings(rows, row)), last, best, Stat(row.paper),
                      Stat(difference(last.mean, row.paper), signed=True),
                      Stat(difference(best.mean, row.paper), signed=True), ijcnn_cell(row, notes),
                      *(row.stat(which, metric) for metric in metrics for which in ("last", "best")), row.status()])
    table = Table([header for header, _ in columns], lines, [better for _, better in columns])
    reference_lines = [paper_references(dataset, model, notes)
                       for dataset, model in dict.fromkeys((row.dataset, row.model) for row in rows)]
    table.after += [f"paper: {source}." for source in dict.fromkeys(paper_source(row.model) for row in rows
                                                                      if row.paper is not None)]
    table.after += [*filter(None, reference_lines), *(f"[{index}] {source}." for source, index in notes.items())]
    column = table.header.index(IJCNN_COLUMN)
    if any("†" in line[column] for line in lines):
        table.after.append("† Not like-for-like: the row's runs do not follow that number's protocol (in its note).")
    if all(line[column] == NONE for line in lines):
        table.drop(column)
    if len({row.dataset for row in rows}) == 1:  # named in the caption instead
        table.drop(0)
    return table


@dataclass
class Sweep:
    """The rows of one family (dataset, model, method, teacher) that differ in other keys: a grid over those."""
    family: tuple
    title: str                 # "resnet32 Tf-FD on cifar100"
    axes: list[str]            # the keys that differ, in schema order; the last one goes across
    values: dict[str, list]    # each axis' values, sorted
    cells: dict[tuple, Row]    # axis values (in the order of axes) -> row

    def down(self) -> list[tuple]:
        """The combinations of all axes but the last that some row has, in order (one empty tuple for a single
        axis): rows that differ in several keys at once, such as the two protocols, are not a full grid."""
        present = {combo[:-1] for combo in self.cells}
        return [combo for combo in itertools.product(*(self.values[key] for key in self.axes[:-1])) if combo in present]


def sweeps(rows: list[Row]) -> list[Sweep]:
    families: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.runs:
            families.setdefault(row.family, []).append(row)
    out = []
    for family, members in families.items():
        axes = varying_keys(members)
        if len(members) < 2 or not axes:
            continue
        dataset, model, method, teacher = family
        title = f"{model} {method}" + (f" (teacher {teacher})" if teacher else "") + f" on {dataset}"
        values = {key: _sorted_values({m.settings.get(key) for m in members}) for key in axes}
        cells = {tuple(m.settings.get(key) for key in axes): m for m in members}
        out.append(Sweep(family, title, axes, values, cells))
    return out


def sweep_grids(rows: list[Row], metrics: tuple[Metric, ...]) -> list[Table]:
    """A table per sweep. One varying key: its values down, last- and best-epoch across. More: a grid per
    number shown, the last varying key across and the others down."""
    grids = []
    for sweep in sweeps(rows):
        shown = (ACC1, *metrics)
        if len(sweep.axes) == 1:
            columns = [(sweep.axes[0], None), *((f"{which}-epoch {metric.header}", metric.better)
                                                 for metric in shown for which in ("last", "best"))]
            lines = [[fmt_value(value), *(_grid_cell(sweep.cells.get((value,)), which, metric)
                                          for metric in shown for which in ("last", "best"))]
                     for value in sweep.values[sweep.axes[0]]]
            title = f"{sweep.title}: " + ", ".join(metric.title for metric in shown)
            grids.append(Table([header for header, _ in columns], lines, [better for _, better in columns], title))
            continue
        down, across = sweep.axes[:-1], sweep.axes[-1]
        for metric in shown:
            for which in ("last", "best"):
                header = [" / ".join(down), *(f"{across}={fmt_value(v)}" for v in sweep.values[across])]
                lines = [[", ".join(fmt_value(v) for v in combo),
                          *(_grid_cell(sweep.cells.get((*combo, value)), which, metric)
                            for value in sweep.values[across])] for combo in sweep.down()]
                grids.append(Table(header, lines, [None] + [metric.better] * (len(header) - 1),
                                   f"{sweep.title}: {which}-epoch {metric.title}"))
    return grids


def _sorted_values(values: set) -> list:
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sorted(values)
    return sorted(values, key=str)


def _grid_cell(row: Row | None, which: str, metric: Metric) -> Stat | str:
    if row is None:
        return "–"
    done = sum(run.finished for run in row.runs)
    if not done:
        return f"unfinished (0/{len(row.runs)})"
    stat = row.stat(which, metric)
    if done < len(row.runs) and stat.mean is not None:
        stat = replace(stat, note=f" ({done}/{len(row.runs)} finished)")
    return stat


def other_published(row: Row) -> tuple[Published, ...]:
    """The published numbers shown beside ``row`` other than the one in its paper column."""
    if row.selfkd is None:
        return ijcnn_published(row.dataset, row.model, row.method, row.teacher)
    like = like_for_like(row)
    return tuple(number for number in published_for(row.selfkd.name, row.dataset, row.selfkd.with_tffd, row.model)
                 if number is not like)


def csv_text(rows: list[Row], metrics: tuple[Metric, ...]) -> str:
    """Every row (of both tables and the sweeps) as one CSV table; the numbers unrounded, none left empty."""
    extra = [f"{which}_{metric.key}_{part}" for metric in metrics for which in ("last", "best")
             for part in ("mean", "std")]
    columns = ["dataset", "model", "method", "teacher", "teacher_acc1", "protocol", "batch_size", "lr", "epochs",
               "settings", "seeds", "finished", "runs", "last_mean", "last_std", "best_mean", "best_std", *extra,
               "paper", "diff_last", "diff_best", "status", "run_dirs", "paper_source", "published_other"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        (last, last_std), (best, best_std) = row.stats("last_acc1"), row.stats("best_acc1")
        numbers = {}
        for metric in metrics:
            for which in ("last", "best"):
                stat = row.stat(which, metric)
                numbers[f"{which}_{metric.key}_mean"], numbers[f"{which}_{metric.key}_std"] = stat.mean, stat.std
        writer.writerow({
            "dataset": row.dataset, "model": row.model, "method": row.method, "teacher": row.teacher or "",
            "teacher_acc1": row.teacher_acc1(), "protocol": row.trained_under(),
            "batch_size": row.settings.get("train.batch_size"),
            "lr": row.settings.get("train.lr"), "epochs": row.settings.get("train.epochs"),
            "settings": describe(varying_settings(rows, row)),
            "seeds": " ".join(str(run.seed) for run in row.runs), "finished": sum(r.finished for r in row.runs),
            "runs": len(row.runs), "last_mean": last, "last_std": last_std, "best_mean": best,
            "best_std": best_std, **numbers, "paper": row.paper, "diff_last": difference(last, row.paper),
            "diff_best": difference(best, row.paper), "status": row.status(),
            "run_dirs": " ".join(str(run.run_dir) for run in row.runs), "paper_source": row.paper_source,
            "published_other": " | ".join(f"{number.top1} ({number.source})" for number in other_published(row)),
        })
    return out.getvalue()


def metric_notes(metrics: tuple[Metric, ...]) -> str:
    if not metrics:
        return ""
    return (" " + "; ".join(f"{metric.name}: {metric.definition}" for metric in metrics) + "; lower is better. "
            "Their best-epoch numbers are those of the best-top-1 epoch; – where a run did not record them "
            "(runs from before they were recorded).")


def report(rows: list[Row], metrics: tuple[Metric, ...] = ()) -> list[Section]:
    """The tables as sections (a heading, paragraphs and tables) that render() writes in any format."""
    paper_rows = [row for row in rows if row.selfkd is None]
    selfkd_rows = [row for row in rows if row.selfkd is not None]
    sections = []
    if paper_rows:
        datasets = sorted({row.dataset for row in paper_rows})
        caption = (f"{' / '.join(datasets)} test top-1 accuracy (%), mean ± sample std over the finished seeds. "
                   "last-epoch: after the final epoch; best-epoch: the best of all epochs (chosen on the test split). "
                   "Δ: ours minus the paper's number (the paper does not say which of the two it reports). "
                   "protocol: the one the runs were trained under, recognised from their resolved config "
                   "(configs/_base_/protocols/): paper (CRD), the one the paper's numbers come from (the CRD "
                   "benchmark's training, λ_inter 5e-3, λ_intra 4e-4); released code, the released Tf-FD code's "
                   "defaults (README λ: its README's ResNet-20 command's 5e-4, 8e-4); neither, with the keys that "
                   "depart from the closest; shortened: fewer epochs than the protocol's.")
        sections.append(Section("", [caption + metric_notes(metrics)], [results_table(paper_rows, metrics)]))
    if selfkd_rows:
        intro = (
            "Test top-1 accuracy (%), mean ± sample std over the finished seeds (unfinished seeds are counted in "
            "the runs columns, never averaged). last-epoch: after the final epoch; best-epoch: the best of all "
            "epochs (chosen on the test split). The CE row's + Tf-FD cells are Tf-FD alone. Published numbers "
            "are shown beside the row of their method, alone or + Tf-FD (only Tf-FD's IJCNN version combines "
            "Tf-FD with other methods: label smoothing, Cutout, AutoAugment), each with a note naming its source, "
            "backbone and protocol; † marks a number that is not like-for-like with the runs. Self-KD-Lib's "
            "table is for PreAct ResNet-18: like-for-like only beside preact_resnet18 runs under its protocol "
            "(scripts/reproduce_selfkd.sh --model preact_resnet18), another backbone beside cifar_resnet18 runs.")
        sections.append(Section("Self-distillation: method × {alone, + Tf-FD}", [intro + metric_notes(metrics)],
                                selfkd_tables(selfkd_rows, metrics)))
    grids = sweep_grids(rows, metrics)
    if grids:
        sections.append(Section("Sweeps", [], grids))
    return sections


# ---------------------------------------------------------------- rendering: text, Markdown, LaTeX
LATEX_TEXT = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
              "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "<": r"$<$",
              ">": r"$>$", "±": r"$\pm$", "–": "--", "−": "$-$", "Δ": r"$\Delta$", "×": r"$\times$",
              "†": r"\textsuperscript{\dag}", "³": r"\textsuperscript{3}", "λ": r"$\lambda$"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_TEXT.get(char, char) for char in text)


def _begin_tabular(widths: list[int], aligns: list[str]) -> str:
    return "\\begin{tabular}{" + "".join("r" if align == "right" else "l" for align in aligns) + "}\n\\toprule"


# tabulate's latex_booktabs, less its escaping: the cells come escaped, with their math.
LATEX_BOOKTABS = TableFormat(lineabove=_begin_tabular, linebelowheader=Line("\\midrule", "", "", ""),
                             linebetweenrows=None, linebelow=Line("\\bottomrule\n\\end{tabular}", "", "", ""),
                             headerrow=DataRow("", "&", "\\\\"), datarow=DataRow("", "&", "\\\\"), padding=1,
                             with_header_hide=None)


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    """The text format's table: Markdown pipes, unpadded."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    return "\n".join(out)


def _cell_text(cell) -> str:
    return cell.text() if isinstance(cell, Stat) else cell


def table_text(table: Table, fmt: str) -> str:
    lines = [[_cell_text(cell) for cell in line] for line in table.lines]
    if fmt == "text":
        return markdown_table(table.header, lines)
    aligns = ["right" if table.numeric(column) else "left" for column in range(len(table.header))]
    escaped = [[cell.replace("|", "\\|") for cell in line] for line in lines]
    return tabulate(escaped, table.header, tablefmt="pipe", disable_numparse=True, colalign=aligns)


def _latex_cell(cell, bold: bool) -> str:
    if not isinstance(cell, Stat):
        return latex_escape(cell)
    if cell.mean is None:
        return "--"
    number = cell.number(r" \pm ")
    return "$" + (rf"\mathbf{{{number}}}" if bold else number) + "$" + latex_escape(cell.note)


def latex_table(table: Table, caption: str) -> str:
    best = table.best_cells()
    lines = [[_latex_cell(cell, (index, column) in best) for column, cell in enumerate(line)]
             for index, line in enumerate(table.lines)]
    aligns = ["right" if table.numeric(column) else "left" for column in range(len(table.header))]
    body = tabulate(lines, [latex_escape(header) for header in table.header], tablefmt=LATEX_BOOKTABS,
                    disable_numparse=True, colalign=aligns)
    out = ["\\begin{table}[htbp]", "\\centering", f"\\caption{{{latex_escape(caption)}}}", body]
    if table.after:
        out.append("\\par\\smallskip{\\footnotesize " + "\\par\n".join(map(latex_escape, table.after)) + "\\par}")
    return "\n".join([*out, "\\end{table}"])


def render(sections: list[Section], fmt: str) -> str:
    """The sections as text or Markdown (### and #### headings, paragraphs, pipe tables), or as LaTeX (a table
    environment per table, captioned with its title and paragraphs; the sections' own text as comments)."""
    if fmt == "latex":
        out = ["% Written by scripts/collect_results.py --format latex; needs \\usepackage{booktabs}."]
        for section in sections:
            out.append("\n".join(f"% {line}" for line in filter(None, [section.heading, *section.intro])))
            out += [latex_table(table, ". ".join([table.title, *table.before]) if table.title
                                else " ".join(section.intro)) for table in section.tables]
        return "\n\n".join(filter(None, out))
    blocks = []
    for section in sections:
        tables = ["\n\n".join([*([f"#### {table.title}"] if table.title else []), *table.before,
                               table_text(table, fmt), *(["\n".join(table.after)] if table.after else [])])
                  for table in section.tables]
        blocks.append("\n\n".join([*([f"### {section.heading}"] if section.heading else []), *section.intro,
                                   *tables]))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------- figures (scripts/plots.py draws them)
def row_label(rows: list[Row], row: Row) -> str:
    settings = describe(varying_settings(rows, row))
    return row.method + (f" ({settings})" if settings else "")


def curve_figures(rows: list[Row]) -> list[plots.Curves]:
    """Per dataset and model, each row's test top-1 over epochs (from metrics.json's history)."""
    models: dict[tuple, list[plots.Curve]] = {}
    for row in rows:
        histories = [run.metrics["history"] for run in row.runs if run.metrics and run.metrics.get("history")]
        curve = plots.seed_band(row_label(rows, row), histories)
        if curve is not None:
            models.setdefault((row.dataset, row.model), []).append(curve)
    return [plots.Curves(f"curves_{dataset}_{model}", f"{model} on {dataset}: test top-1 over epochs", curves)
            for (dataset, model), curves in models.items()]


def sweep_heatmaps(rows: list[Row]) -> list[plots.Heatmap]:
    """Each sweep's last- and best-epoch top-1, the last axis across, the others down."""
    heatmaps = []
    for sweep in sweeps(rows):
        down, across = sweep.axes[:-1], sweep.axes[-1]
        cells = {which: [[_heatmap_cell(sweep.cells.get((*combo, value)), which) for value in sweep.values[across]]
                          for combo in sweep.down()] for which in ("last", "best")}
        if all(stat.mean is None for grid in cells.values() for line in grid for stat in line):
            continue
        yticks = [", ".join(fmt_value(v) for v in combo) for combo in sweep.down()] if down else [sweep.family[2]]
        heatmaps.append(plots.Heatmap(
            "sweep_" + "_".join(filter(None, sweep.family)), f"{sweep.title}: test top-1 (%) per setting", across,
            " / ".join(down) or "method", [fmt_value(value) for value in sweep.values[across]], yticks, cells))
    return heatmaps


def _heatmap_cell(row: Row | None, which: str) -> Stat:
    cell = _grid_cell(row, which, ACC1)  # with its note on unfinished seeds
    return cell if isinstance(cell, Stat) else Stat(None)


def bar_figures(rows: list[Row]) -> tuple[list[plots.Bars], list[str]]:
    """Our best-epoch top-1 beside the published numbers: the Tf-FD paper's table (model x method) and each
    self-KD table (method x {alone, + Tf-FD}); and the rows left out (a sweep's, which has no one row)."""
    figures = []
    paper_rows = [row for row in rows if row.selfkd is None and row.paper is not None]
    family_size = {family: sum(1 for row in paper_rows if row.family == family and row.runs)
                   for family in {row.family for row in paper_rows}}
    left_out = list(dict.fromkeys(f"{row.model} {row.method}" for row in paper_rows if family_size[row.family] > 1))
    bars: dict[tuple, plots.Bar] = {}
    for row in paper_rows:
        if family_size[row.family] == 1 and row.stat("best", ACC1).mean is not None:
            bars[(row.model, row.method)] = plots.Bar(row.stat("best", ACC1), row.paper)
    if bars:  # the paper's numbers are CIFAR-100's
        models = list(dict.fromkeys(model for model, _ in bars))
        figures.append(plots.Bars("paper_bars_cifar100", "cifar100: best-epoch test top-1 beside the Tf-FD paper's "
                                  "table", "model", models, list(METHODS), bars, "Tf-FD paper"))
    contexts = selfkd_contexts([row for row in rows if row.selfkd is not None])
    for context in contexts:
        bars, groups = {}, []
        for name, settings, alone, with_tffd in selfkd_pairs(context.rows):
            group = name + (f"\n{settings}" if settings else "")
            groups.append(group)
            like = like_for_like(alone) if alone else None
            others = [number.top1 for number in published_for(name, context.dataset, False, context.model)
                      if number is not like]
            bars[(group, "alone")] = plots.Bar(stat_of(alone, "best"), like.top1 if like else None, others)
            bars[(group, "+ Tf-FD")] = plots.Bar(stat_of(with_tffd, "best"))
        if any(bar.paper is not None or bar.others for bar in bars.values()):
            same = [c for c in contexts if (c.dataset, c.model) == (context.dataset, context.model)]
            suffix = f"_{same.index(context) + 1}" if len(same) > 1 else ""
            figures.append(plots.Bars(f"selfkd_bars_{context.dataset}_{context.model}{suffix}",
                                      f"{context.title}: best-epoch test top-1 beside the published numbers",
                                      "method", groups, ["alone", "+ Tf-FD"], bars, "published, like-for-like"))
    return figures, left_out


# ---------------------------------------------------------------- the command line
def parse_metrics(text: str) -> tuple[Metric, ...]:
    """--metrics acc1,ece,nll: the numbers shown besides top-1 (always shown), in the order given."""
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ConfigError(f"--metrics takes a list of {', '.join(METRICS)}, got {text!r}")
    return tuple(METRICS[name] for name in dict.fromkeys(names) if name != ACC1.key)


def write_file(path: Path, text: str, flag: str) -> None:
    try:
        atomic_write(path, lambda out: out.write(text.encode()))
    except OSError as error:
        raise RunDirError(f"cannot write {flag} {path}: {error.strerror or error}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="*", default=["runs/cifar100"], help="directories to search for runs")
    parser.add_argument("--format", choices=FORMATS, default="text",
                        help="text (default: Markdown-style pipe tables), markdown (aligned), csv (every row, "
                             "unrounded) or latex (booktabs; the best entry of each column in bold)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the table to FILE instead of stdout")
    parser.add_argument("--metrics", default=ACC1.key, metavar="LIST",
                        help=f"numbers shown besides top-1, last- and best-epoch each: a list of {', '.join(METRICS)} "
                             "(default acc1: top-1 only)")
    parser.add_argument("--plots", type=Path, metavar="DIR",
                        help="also draw the figures (PNG and PDF) into DIR: curves, sweep heatmaps, bars beside "
                             "the published numbers")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write --format csv to FILE (older spelling)")
    args = parser.parse_args(argv)
    metrics = parse_metrics(args.metrics)
    for flag, path in (("--out", args.out), ("--csv", args.csv)):
        if path is not None:
            check_output_file(path, flag)
    if args.plots is not None:
        check_output_dir(args.plots, "--plots")
    roots = [Path(root) for root in args.roots]
    for root in roots:  # a dangling symlink or a loop is named by kind_of
        kind = kind_of(root, f"ROOT {root}")
        if kind != "dir":
            raise RunDirError(f"no such directory: {root}" if kind is None else
                              f"ROOT {root} is a file, not a directory; name a directory of run directories")
    found = find_runs(roots)
    if not found:
        print(f"error: no run directories (with a {CONFIG_FILE}) under {', '.join(map(str, roots))}", file=sys.stderr)
        return 2
    rows = table_order(add_missing_paper_cells(group_rows(found)))
    text = csv_text(rows, metrics) if args.format == "csv" else render(report(rows, metrics), args.format) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_file(args.out, text, "--out")
        print(f"{args.format}: {args.out}", file=sys.stderr)
    if args.csv is not None:
        write_file(args.csv, csv_text(rows, metrics), "--csv")
        print(f"CSV: {args.csv}", file=sys.stderr)
    if args.plots is not None:
        bars, left_out = bar_figures(rows)
        written = plots.write_figures(args.plots, curve_figures(rows), sweep_heatmaps(rows), bars)
        names = ", ".join(written) or "none (no run has the data for any)"
        print(f"figures ({', '.join(plots.FORMATS)}) in {args.plots}: {names}", file=sys.stderr)
        if left_out:
            print(f"not in the bars (several configs, see the sweep heatmaps): {', '.join(left_out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    exit_with(main)
