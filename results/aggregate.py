"""Aggregating runs into rows: runs whose resolved configs differ only in the seed (and in paths or logging
settings) form one row, the mean ± sample std over its finished seeds; the options of unused loss terms,
augmentations, batch transforms and teachers do not tell rows apart. The published cells of the Tf-FD paper's
table without runs are added as rows without runs, and the rows are put in the paper's order."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from core.typed_config import all_keys
from data.augmentations import AUGMENTATIONS
from data.batch_transforms import BATCH_TRANSFORMS
from engine.config import ExperimentConfig
from engine.hparams import hparams_of
from engine.run_dir import RESUME_MAY_CHANGE
from losses import LOSSES
from results.compare import like_for_like
from results.methods import METHODS, SelfKD, method_of, selfkd_of
from results.numbers import ACC1, Metric, Stat, describe
from results.protocols import protocol_deviations, protocol_of, tffd_protocol
from results.published import IJCNN_TABLE, paper_cells, paper_source, paper_top1
from results.runs import Run

# Keys that do not change what a run computes, besides the seed the rows average over.
NOT_IDENTITY = {"seed"} | set(RESUME_MAY_CHANGE)
SCHEMA_ORDER = {key: index for index, key in enumerate(all_keys(ExperimentConfig))}


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
        values = [
            run.metrics["teacher_acc1"]
            for run in self.runs
            if run.metrics and run.metrics.get("teacher_acc1") is not None
        ]
        return statistics.fmean(values) if values else None

    def protocol(self) -> str:
        if not self.settings:
            return ""
        return (
            f"batch {self.settings['train.batch_size']}, lr {self.settings['train.lr']:g}, "
            f"{self.settings['train.epochs']} ep"
        )

    def trained_under(self) -> str:
        """The protocol the runs follow: for the Tf-FD paper's table, one of protocols.TFFD_PROTOCOLS or
        "neither (...)"; for a self-KD table, its dataset's protocol (SELFKD_PROTOCOLS) or "not" that one."""
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


def identity(config) -> tuple[dict, bool]:
    """The flat config keys that decide what a run computes, and whether it uses a teacher. The options
    of inactive loss terms, augmentations and batch transforms, and of an unused teacher, are left out: they
    change nothing."""
    uses_teacher = any(LOSSES[name].term.requires_teacher for name in config.loss.terms if name in LOSSES)
    unused = tuple(f"loss.{name}." for name in LOSSES if name not in config.loss.terms)
    unused += tuple(f"batch.{name}." for name in BATCH_TRANSFORMS if name not in config.batch.transforms)
    unused += tuple(f"data.{name}." for name in AUGMENTATIONS if name not in config.data.augment)
    unused += () if uses_teacher else ("teacher.",)
    settings = {
        key: value
        for key, value in hparams_of(config).items()
        if key not in NOT_IDENTITY and not key.startswith(unused)
    }
    return settings, uses_teacher


def group_rows(found) -> list[Row]:
    rows: dict[tuple, Row] = {}
    for run_dir, config, metrics in found:
        settings, uses_teacher = identity(config)
        key = tuple(sorted(settings.items()))
        if key not in rows:
            selfkd = None if uses_teacher else selfkd_of(config, settings)
            method = selfkd.label if selfkd else method_of(config.loss.terms)
            rows[key] = Row(
                config.data.name,
                config.model.name,
                method,
                config.teacher.model if uses_teacher else None,
                settings,
                selfkd=selfkd,
            )
        rows[key].runs.append(Run(run_dir, config.seed, metrics))
    for row in rows.values():
        row.runs.sort(key=lambda run: (run.seed, str(run.run_dir)))
    return list(rows.values())


def collect_rows(found) -> list[Row]:
    """The rows of the runs ``found`` (results.runs.find_runs), with the published cells that have no runs, in
    table order."""
    return table_order(add_missing_paper_cells(group_rows(found)))


def add_missing_paper_cells(rows: list[Row]) -> list[Row]:
    """For each dataset of the paper table's rows, the published cells (the paper's on CIFAR-100, the IJCNN
    version's) that no row covers, as rows without runs."""
    datasets = {row.dataset for row in rows if row.selfkd is None}
    cells = [("cifar100", model, method, teacher) for model, method, teacher, _ in paper_cells()]
    covered = {row.family for row in rows}
    missing = [
        Row(*cell, {})
        for cell in dict.fromkeys(cells + list(IJCNN_TABLE))
        if cell[0] in datasets and cell not in covered
    ]
    return rows + missing


def table_order(rows: list[Row]) -> list[Row]:
    """Per dataset, the paper's order (teachers, then each student's rows in the order of METHODS), then the
    other models."""
    models = list(dict.fromkeys(model for model, *_ in paper_cells()))
    method_index = {method: index for index, method in enumerate(METHODS)}

    def key(row: Row):
        return (
            row.dataset,
            models.index(row.model) if row.model in models else len(models),
            row.model,
            method_index.get(row.method, len(METHODS)),
            row.method,
            row.teacher or "",
            describe(varying_settings(rows, row)),
        )

    return sorted(rows, key=key)


def varying_keys(rows: list[Row]) -> list[str]:
    """The identity keys whose values differ among ``rows`` (rows of one family: a sweep's axes)."""
    return varying_among([row.settings for row in rows])


def varying_among(settings: list[dict]) -> list[str]:
    """The keys whose values differ among these flat settings, in schema order."""
    keys = sorted(
        {key for one in settings for key in one}, key=lambda key: (SCHEMA_ORDER.get(key, len(SCHEMA_ORDER)), key)
    )
    return [key for key in keys if len({one.get(key) for one in settings}) > 1]


def varying_settings(all_rows: list[Row], row: Row) -> dict:
    family = [other for other in all_rows if other.family == row.family and other.runs]
    return {key: row.settings.get(key) for key in varying_keys(family)} if row.runs else {}
