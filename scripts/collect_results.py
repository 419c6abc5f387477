"""Turn run directories into a Markdown table (and a CSV on request), beside the paper's numbers.

    python scripts/collect_results.py [ROOT ...] [--csv FILE]      (default ROOT: runs/cifar100)

Every directory under the roots that holds a config.yaml is a run. Runs whose resolved configs differ
only in the seed (and in paths or logging settings) form one row: mean ± sample std over the finished
seeds of both the last-epoch and the best-epoch test top-1, the paper's number (scripts/paper_numbers.py)
and our difference from it. Unfinished seeds are counted and marked, never averaged; for CIFAR-100, the
paper's cells that have no runs yet are listed as missing. Rows of one model and method that differ in
other keys (a sweep) are also shown as a grid over those keys, e.g. lambda_intra x lambda_inter.

Self-distillation runs (scripts/reproduce_selfkd.sh: a self-KD loss term or a batch transform, or the
cifar_resnet18 / preact_resnet18 backbones) are shown apart, as a method x {alone, + Tf-FD} table per
model and protocol: the method is recognised from loss.terms and batch.transforms (terms [ce] with
transforms [mixup] is "Mixup"; [ce, cs_kd, tffd] is "CS-KD" + Tf-FD), beside the published numbers of
the method alone (scripts/paper_numbers.py), each with a note naming its source, backbone and protocol
and saying whether it is like-for-like with the runs (same backbone, Self-KD-Lib's protocol, CIFAR-100).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from paper_numbers import (BASELINE, KD, KD_TFFD, METHODS, SELFKD_NAMES, TFFD, TFFD_PAPER, Published, paper_cells,
                           paper_top1, selfkd_published)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.cli import exit_with  # noqa: E402
from engine.config import ExperimentConfig, config_from_dict, load_config  # noqa: E402
from core.errors import UserError  # noqa: E402
from engine.run_dir import CONFIG_FILE, RESUME_MAY_CHANGE, read_metrics  # noqa: E402
from engine.trainer import hparams_of  # noqa: E402
from core.typed_config import all_keys, load_yaml_tree  # noqa: E402
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
SELFKD_BACKBONES = ("cifar_resnet18", "preact_resnet18")
SELFKD_SCHEDULE = REPO / "configs" / "_base_" / "schedules" / "selfkd_200e.yaml"  # Self-KD-Lib's protocol


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

    @property
    def paper(self) -> float | None:
        """The published number this row is compared with: the Tf-FD paper's cell, or for a self-KD row the
        like-for-like published number of its method alone (None if there is none)."""
        if self.selfkd is not None:
            like = like_for_like(self)
            return like.top1 if like else None
        return paper_top1(self.dataset, self.model, self.method, self.teacher)

    @property
    def paper_source(self) -> str:
        if self.selfkd is not None:
            like = like_for_like(self)
            return like.source if like else ""
        return TFFD_PAPER if self.paper is not None else ""

    def teacher_acc1(self) -> float | None:
        values = [run.metrics["teacher_acc1"] for run in self.runs
                  if run.metrics and run.metrics.get("teacher_acc1") is not None]
        return statistics.fmean(values) if values else None

    def protocol(self) -> str:
        if not self.settings:
            return ""
        return (f"batch {self.settings['train.batch_size']}, lr {self.settings['train.lr']:g}, "
                f"{self.settings['train.epochs']} ep")

    def status(self) -> str:
        if not self.runs:
            return "missing"
        done = sum(run.finished for run in self.runs)
        unfinished = [run.progress() for run in self.runs if not run.finished]
        return f"{done}/{len(self.runs)} finished" + (f"; {', '.join(unfinished)}" if unfinished else "")


# ---------------------------------------------------------------- reading runs
def find_runs(roots: list[Path]) -> list[tuple[Path, object, dict | None]]:
    """(run dir, its typed resolved config, its metrics or None) for every run under ``roots``."""
    found = []
    for root in roots:
        for config_file in sorted(root.rglob(CONFIG_FILE)):
            run_dir = config_file.parent
            try:
                config = config_from_dict(yaml.safe_load(config_file.read_text()) or {})
            except (UserError, yaml.YAMLError) as error:
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
    table (CE or Tf-FD, without batch transforms, on a backbone other than the self-KD ones)."""
    terms = [term for term in config.loss.terms if term != "tffd"]
    parts = tuple(term for term in terms if term != "ce") + tuple(config.batch.transforms)
    if not parts and config.model.name not in SELFKD_BACKBONES:
        return None
    name = " + ".join(SELFKD_NAMES.get(part, part) for part in parts) or SELFKD_NAMES["ce"]
    method = {key: value for key, value in settings.items()
              if key.startswith(("loss.", "batch.")) and key != "loss.terms" and not key.startswith("loss.tffd.")}
    method["loss.terms"] = str(sorted(terms))
    tffd = {key: value for key, value in settings.items() if key.startswith("loss.tffd.")}
    return SelfKD(name, parts, "tffd" in config.loss.terms, method, tffd)


def identity(config) -> tuple[dict, bool]:
    """The flat config keys that decide what a run computes, and whether it uses a teacher. The options
    of inactive loss terms and batch transforms, and of an unused teacher, are left out: they change nothing."""
    uses_teacher = any(LOSSES[name].term.requires_teacher for name in config.loss.terms if name in LOSSES)
    unused = tuple(f"loss.{name}." for name in LOSSES if name not in config.loss.terms)
    unused += tuple(f"batch.{name}." for name in BATCH_TRANSFORMS if name not in config.batch.transforms)
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
    """For CIFAR-100 collections, the paper's cells that no row covers, as rows without runs."""
    if not any(row.dataset == "cifar100" and row.selfkd is None for row in rows):
        return rows
    covered = {row.family for row in rows}
    missing = [Row("cifar100", model, method, teacher, {}) for model, method, teacher, _ in paper_cells()
               if ("cifar100", model, method, teacher) not in covered]
    return rows + missing


def table_order(rows: list[Row]) -> list[Row]:
    """Per dataset, the paper's order (teachers, then each student's four rows), then everything else."""
    paper_index = {(model, method, teacher): index for index, (model, method, teacher, _) in enumerate(paper_cells())}
    method_index = {method: index for index, method in enumerate(METHODS)}

    def key(row: Row):
        return (row.dataset, paper_index.get(row.family[1:], len(paper_index)), row.model,
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
def selfkd_protocol() -> dict:
    """The flat keys Self-KD-Lib's schedule file sets, with their typed values as rows hold them."""
    keys = [f"train.{key}" for key in load_yaml_tree(SELFKD_SCHEDULE)["train"]]
    flat = hparams_of(load_config(SELFKD_SCHEDULE))
    return {key: flat[key] for key in keys}


def protocol_deviations(dataset: str, settings: dict) -> list[str]:
    """How runs of these settings depart from Self-KD-Lib's CIFAR-100 protocol (empty: they follow it)."""
    out = [] if dataset == "cifar100" else [f"dataset {dataset}, not cifar100"]
    return out + [f"{key}={fmt_value(settings.get(key))}, not {fmt_value(value)}"
                  for key, value in selfkd_protocol().items() if settings.get(key) != value]


def like_for_like(row: Row) -> Published | None:
    """The published number of the same method alone, backbone and protocol (CIFAR-100) as ``row``."""
    if row.selfkd is None or row.selfkd.with_tffd or protocol_deviations(row.dataset, row.settings):
        return None
    return next((published for published in selfkd_published(row.selfkd.name)
                 if published.selfkd_protocol and published.model == row.model), None)


def _context(row: Row) -> tuple:
    """What the rows of one self-KD table share: every identity key outside ``loss.`` and ``batch.``."""
    return tuple(sorted((key, value) for key, value in row.settings.items()
                        if not key.startswith(("loss.", "batch."))))


def selfkd_tables(rows: list[Row]) -> list[str]:
    """One method x {alone, + Tf-FD} table per dataset, model and protocol (the keys outside loss and batch)."""
    contexts: dict[tuple, list[Row]] = {}
    for row in rows:
        contexts.setdefault((row.dataset, row.model, _context(row)), []).append(row)
    tables = []
    for (dataset, model, context), members in sorted(contexts.items(), key=lambda item: str(item[0])):
        siblings = [dict(c) for d, m, c in contexts if (d, m) == (dataset, model)]
        shown = ("train.batch_size", "train.lr", "train.epochs")  # in the protocol string already
        differs = describe({key: dict(context).get(key) for key in _varying(siblings) if key not in shown})
        title = f"#### {model} on {dataset}: {members[0].protocol()}" + (f", {differs}" if differs else "")
        deviations = protocol_deviations(dataset, dict(context))
        if deviations:
            protocol = ("Not Self-KD-Lib's CIFAR-100 protocol (" + "; ".join(deviations) + "): no published "
                        "number is like-for-like.")
        else:
            protocol = f"Self-KD-Lib's CIFAR-100 protocol ({SELFKD_SCHEDULE.relative_to(REPO)})."
        table, notes = selfkd_table(model, members, like_protocol=not deviations)
        tables.append("\n\n".join([title, protocol, table, "\n".join(notes)]))
    return tables


def selfkd_table(model: str, rows: list[Row], like_protocol: bool) -> tuple[str, list[str]]:
    """The table of one context, and its notes on the published numbers."""
    order = {part: index for index, part in enumerate(SELFKD_NAMES)}
    first = {row.selfkd.name: min((order.get(part, len(order)) for part in row.selfkd.parts), default=0)
             for row in rows}
    tffd_keys = _varying([row.selfkd.tffd for row in rows if row.selfkd.with_tffd])
    notes: dict[tuple, int] = {}
    lines = []
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
                lines.append(_selfkd_line(name, settings, alone, with_tffd, model, like_protocol, notes))
    header = ["method", "settings", "alone: last-epoch top-1", "alone: best-epoch top-1",
              "+ Tf-FD: last-epoch top-1", "+ Tf-FD: best-epoch top-1", "Δ best, + Tf-FD − alone",
              "published top-1, alone [note]", "Δ best, alone − like-for-like published", "runs alone",
              "runs + Tf-FD"]
    if not any(line[1] for line in lines):
        header, lines = header[:1] + header[2:], [line[:1] + line[2:] for line in lines]
    text = []
    for (source, backbone, published_model, own_protocol), index in notes.items():
        like = published_model == model and own_protocol and like_protocol
        if like:
            verdict = "Like-for-like with these runs: same backbone and protocol."
        else:
            reasons = [] if published_model == model else [f"another backbone ({backbone}; these runs: {model})"]
            if not own_protocol:
                reasons.append("another protocol")
            elif not like_protocol:
                reasons.append("these runs do not follow its protocol")
            verdict = "† Not like-for-like: " + ", ".join(reasons) + "."
        text.append(f"[{index}] {source}. {verdict}")
    return markdown_table(header, lines), text


def _selfkd_line(name: str, settings: str, alone: Row | None, with_tffd: Row | None, model: str,
                 like_protocol: bool, notes: dict) -> list[str]:
    def stats(row: Row | None, key: str) -> tuple[float | None, float | None]:
        return row.stats(key) if row else (None, None)

    published = []
    for number in selfkd_published(name):
        key = (number.source, number.backbone, number.model, number.selfkd_protocol)
        index = notes.setdefault(key, len(notes) + 1)
        like = number.model == model and number.selfkd_protocol and like_protocol
        baseline = f" (CE {number.baseline:.2f})" if number.baseline is not None else ""
        published.append(f"{number.top1:.2f}{baseline} [{index}]" + ("" if like else "†"))
    like = like_for_like(alone) if alone else None
    alone_best, tffd_best = stats(alone, "best_acc1")[0], stats(with_tffd, "best_acc1")[0]
    return [name, settings, fmt_stats(*stats(alone, "last_acc1")), fmt_stats(*stats(alone, "best_acc1")),
            fmt_stats(*stats(with_tffd, "last_acc1")), fmt_stats(*stats(with_tffd, "best_acc1")),
            fmt_number(difference(tffd_best, alone_best), signed=True), "; ".join(published) or "–",
            fmt_number(difference(alone_best, like.top1 if like else None), signed=True),
            alone.status() if alone else "–", with_tffd.status() if with_tffd else "–"]


# ---------------------------------------------------------------- formatting
def fmt_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(settings: dict) -> str:
    return ", ".join(f"{key}={fmt_value(value)}" for key, value in settings.items())


def fmt_stats(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def fmt_number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def difference(mean: float | None, paper: float | None) -> float | None:
    return None if mean is None or paper is None else mean - paper


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    return "\n".join(out)


def results_table(rows: list[Row]) -> str:
    one_dataset = len({row.dataset for row in rows}) == 1
    header = ["dataset", "model", "method", "teacher (top-1)", "protocol", "settings", "last-epoch top-1",
              "best-epoch top-1", "paper", "Δ last", "Δ best", "runs"]
    lines = []
    for row in rows:
        last, best = row.stats("last_acc1"), row.stats("best_acc1")
        teacher = row.teacher or ""
        if row.teacher and row.teacher_acc1() is not None:
            teacher += f" ({row.teacher_acc1():.2f})"
        lines.append([row.dataset, row.model, row.method, teacher, row.protocol(),
                      describe(varying_settings(rows, row)), fmt_stats(*last), fmt_stats(*best),
                      fmt_number(row.paper), fmt_number(difference(last[0], row.paper), signed=True),
                      fmt_number(difference(best[0], row.paper), signed=True), row.status()])
    if one_dataset:  # named in the caption instead
        header, lines = header[1:], [line[1:] for line in lines]
    return markdown_table(header, lines)


def sweep_grids(rows: list[Row]) -> list[str]:
    """A table per family with more than one config. One varying key: its values down, last- and
    best-epoch across. More: a grid per accuracy, the last varying key across and the others down."""
    grids = []
    families: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.runs:
            families.setdefault(row.family, []).append(row)
    for family, members in families.items():
        axes = varying_keys(members)
        if len(members) < 2 or not axes:
            continue
        dataset, model, method, teacher = family
        title = f"{model} {method}" + (f" (teacher {teacher})" if teacher else "") + f" on {dataset}"
        values = {key: _sorted_values({m.settings.get(key) for m in members}) for key in axes}
        cell_of = {tuple(m.settings.get(key) for key in axes): m for m in members}
        if len(axes) == 1:
            lines = [[fmt_value(value), _grid_cell(cell_of.get((value,)), "last_acc1"),
                      _grid_cell(cell_of.get((value,)), "best_acc1")] for value in values[axes[0]]]
            table = markdown_table([axes[0], "last-epoch top-1", "best-epoch top-1"], lines)
            grids.append(f"#### {title}: top-1 (%)\n\n{table}")
            continue
        down, across = axes[:-1], axes[-1]
        for metric, label in (("last_acc1", "last-epoch"), ("best_acc1", "best-epoch")):
            header = [" / ".join(down), *(f"{across}={fmt_value(v)}" for v in values[across])]
            lines = []
            for combo in itertools.product(*(values[key] for key in down)):
                line = [", ".join(fmt_value(v) for v in combo)]
                line += [_grid_cell(cell_of.get((*combo, value)), metric) for value in values[across]]
                lines.append(line)
            grids.append(f"#### {title}: {label} top-1 (%)\n\n{markdown_table(header, lines)}")
    return grids


def _sorted_values(values: set) -> list:
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sorted(values)
    return sorted(values, key=str)


def _grid_cell(row: Row | None, metric: str) -> str:
    if row is None:
        return "–"
    mean, std = row.stats(metric)
    done = sum(run.finished for run in row.runs)
    if mean is None:
        return f"unfinished (0/{len(row.runs)})"
    return fmt_stats(mean, std) + (f" ({done}/{len(row.runs)} finished)" if done < len(row.runs) else "")


def write_csv(path: Path, rows: list[Row]) -> None:
    columns = ["dataset", "model", "method", "teacher", "teacher_acc1", "batch_size", "lr", "epochs", "settings",
               "seeds", "finished", "runs", "last_mean", "last_std", "best_mean", "best_std", "paper",
               "diff_last", "diff_best", "status", "run_dirs", "paper_source"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            (last, last_std), (best, best_std) = row.stats("last_acc1"), row.stats("best_acc1")
            writer.writerow({
                "dataset": row.dataset, "model": row.model, "method": row.method, "teacher": row.teacher or "",
                "teacher_acc1": row.teacher_acc1(), "batch_size": row.settings.get("train.batch_size"),
                "lr": row.settings.get("train.lr"), "epochs": row.settings.get("train.epochs"),
                "settings": describe(varying_settings(rows, row)),
                "seeds": " ".join(str(run.seed) for run in row.runs), "finished": sum(r.finished for r in row.runs),
                "runs": len(row.runs), "last_mean": last, "last_std": last_std, "best_mean": best,
                "best_std": best_std, "paper": row.paper, "diff_last": difference(last, row.paper),
                "diff_best": difference(best, row.paper), "status": row.status(),
                "run_dirs": " ".join(str(run.run_dir) for run in row.runs), "paper_source": row.paper_source,
            })


def report(rows: list[Row]) -> str:
    paper_rows = [row for row in rows if row.selfkd is None]
    selfkd_rows = [row for row in rows if row.selfkd is not None]
    parts = []
    if paper_rows:
        datasets = sorted({row.dataset for row in paper_rows})
        parts += [
            f"{' / '.join(datasets)} test top-1 accuracy (%), mean ± sample std over the finished seeds. "
            "last-epoch: after the final epoch; best-epoch: the best of all epochs (chosen on the test split). "
            "Δ: ours minus the paper's number (the paper does not say which of the two it reports).",
            "",
            results_table(paper_rows),
        ]
    if selfkd_rows:
        parts += ([""] if parts else []) + [
            "### Self-distillation: method × {alone, + Tf-FD}",
            "",
            "Test top-1 accuracy (%), mean ± sample std over the finished seeds (unfinished seeds are counted in "
            "the runs columns, never averaged). last-epoch: after the final epoch; best-epoch: the best of all "
            "epochs (chosen on the test split). The CE row's + Tf-FD cells are Tf-FD alone. Published numbers "
            "are for the method alone (no source reports a method + Tf-FD), each with a note naming its source, "
            "backbone and protocol; † marks a number that is not like-for-like with the runs. Self-KD-Lib's "
            "table is for PreAct ResNet-18: like-for-like only beside preact_resnet18 runs under its protocol "
            "(scripts/reproduce_selfkd.sh --model preact_resnet18), another backbone beside cifar_resnet18 runs.",
            "",
            "\n\n".join(selfkd_tables(selfkd_rows)),
        ]
    grids = sweep_grids(rows)
    if grids:
        parts += ["", "### Sweeps", "", "\n\n".join(grids)]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="*", default=["runs/cifar100"], help="directories to search for runs")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV to this file")
    args = parser.parse_args(argv)
    roots = [Path(root) for root in args.roots]
    absent = [root for root in roots if not root.is_dir()]
    if absent:
        print(f"error: no such directory: {absent[0]}", file=sys.stderr)
        return 2
    found = find_runs(roots)
    if not found:
        print(f"error: no run directories (with a {CONFIG_FILE}) under {', '.join(map(str, roots))}", file=sys.stderr)
        return 2
    rows = table_order(add_missing_paper_cells(group_rows(found)))
    print(report(rows))
    if args.csv:
        write_csv(args.csv, rows)
        print(f"\nCSV: {args.csv}")
    return 0


if __name__ == "__main__":
    exit_with(main)
