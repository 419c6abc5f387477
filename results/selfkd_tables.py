"""The self-distillation tables: one method x {alone, + Tf-FD} table per dataset, model and protocol (the
identity keys outside the method's), each beside the published numbers of its methods with a note naming
their source, backbone and protocol and saying whether they are like-for-like with its runs; under each, the
published numbers of its backbone whose method has no runs there, and the references (methods with no config
here)."""

from __future__ import annotations

from dataclasses import dataclass

from results.aggregate import Row, stat_of, varying_among
from results.compare import follows, like_for_like, number_schedule, published_for
from results.methods import METHOD_KEYS, SELFKD_NAMES, TFFD
from results.numbers import MAX, NONE, Metric, Stat, describe, difference
from results.protocols import REPO, protocol_deviations, protocol_of
from results.published import Published, references
from results.tables import Table


def _context(row: Row) -> tuple:
    """What the rows of one self-KD table share: every identity key outside the method's (METHOD_KEYS)."""
    return tuple(sorted((key, value) for key, value in row.settings.items() if not key.startswith(METHOD_KEYS)))


@dataclass
class SelfKDContext:
    """The rows of one self-KD table: one dataset, model and protocol (the keys outside METHOD_KEYS)."""

    dataset: str
    model: str
    title: str  # "cifar_resnet18 on cifar100: batch 128, lr 0.1, 200 ep"
    deviations: list[str]  # how it departs from Self-KD-Lib's protocol (empty: it follows it)
    rows: list[Row]
    settings: dict  # the keys its rows share (those outside METHOD_KEYS)


def selfkd_contexts(rows: list[Row]) -> list[SelfKDContext]:
    contexts: dict[tuple, list[Row]] = {}
    for row in rows:
        contexts.setdefault((row.dataset, row.model, _context(row)), []).append(row)
    out = []
    for (dataset, model, context), members in sorted(contexts.items(), key=lambda item: str(item[0])):
        siblings = [dict(c) for d, m, c in contexts if (d, m) == (dataset, model)]
        shown = ("train.batch_size", "train.lr", "train.epochs")  # in the protocol string already
        differs = describe({key: dict(context).get(key) for key in varying_among(siblings) if key not in shown})
        title = f"{model} on {dataset}: {members[0].protocol()}" + (f", {differs}" if differs else "")
        out.append(
            SelfKDContext(dataset, model, title, protocol_deviations(dataset, dict(context)), members, dict(context))
        )
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
            protocol = (
                f"Not {name} (" + "; ".join(context.deviations) + "): like-for-like only with the numbers "
                "published under these runs' own protocol."
            )
        else:
            protocol = f"Not {name} (" + "; ".join(context.deviations) + "): no published number is like-for-like."
        table.title, table.before = context.title, [protocol]
        tables.append(table)
    return tables


def selfkd_pairs(rows: list[Row]) -> list[tuple[str, str, Row | None, Row | None]]:
    """The lines of one self-KD table, in order: (method name, its settings, the row alone, the row + Tf-FD)."""
    order = {part: index for index, part in enumerate(SELFKD_NAMES)}
    first = {
        row.selfkd.name: min((order.get(part, len(order)) for part in row.selfkd.parts), default=0) for row in rows
    }
    tffd_keys = varying_among([row.selfkd.tffd for row in rows if row.selfkd.with_tffd])
    pairs = []
    for name in sorted(first, key=lambda name: (first[name], name)):
        members = [row for row in rows if row.selfkd.name == name]
        method_keys = varying_among([row.selfkd.method for row in members])

        def method_of_row(row: Row, method_keys: list = method_keys) -> tuple:
            return tuple((key, row.selfkd.method.get(key)) for key in method_keys)

        def tffd_of_row(row: Row) -> tuple:
            return tuple((key, row.selfkd.tffd.get(key)) for key in tffd_keys)

        for method in sorted({method_of_row(row) for row in members}, key=str):
            same = [row for row in members if method_of_row(row) == method]
            alone = next((row for row in same if not row.selfkd.with_tffd), None)
            plus = [row for row in same if row.selfkd.with_tffd]
            for tffd in sorted({tffd_of_row(row) for row in plus}, key=str) or [()]:
                with_tffd = next((row for row in plus if tffd_of_row(row) == tffd), None)
                settings = "; ".join(
                    filter(None, [describe(dict(method)), f"Tf-FD {describe(dict(tffd))}" if tffd else ""])
                )
                pairs.append((name, settings, alone, with_tffd))
    return pairs


def selfkd_table(context: SelfKDContext, metrics: tuple[Metric, ...]) -> tuple[Table, bool]:
    """The table of one context, with its notes on the published numbers below it; and whether any of
    those numbers is like-for-like with its runs."""
    notes: dict[tuple, int] = {}
    pairs = selfkd_pairs(context.rows)
    lines = [
        _selfkd_line(name, settings, alone, with_tffd, context, notes, metrics)
        for name, settings, alone, with_tffd in pairs
    ]
    published_metric = {metric: f"published {metric.header}, alone [note]" for metric in metrics}
    columns = [
        ("method", None),
        ("settings", None),
        ("alone: last-epoch top-1", MAX),
        ("alone: best-epoch top-1", MAX),
        ("+ Tf-FD: last-epoch top-1", MAX),
        ("+ Tf-FD: best-epoch top-1", MAX),
        ("Δ best, + Tf-FD − alone", None),
        ("published top-1, alone [note]", None),
        ("Δ best, alone − like-for-like published", None),
        ("published top-1, + Tf-FD [note]", None),
        ("Δ best, + Tf-FD − like-for-like published", None),
        *(
            column
            for metric in metrics
            for column in (
                *(
                    (f"{side}: {which}-epoch {metric.header}", metric.better)
                    for side in ("alone", "+ Tf-FD")
                    for which in ("last", "best")
                ),
                (published_metric[metric], None),
            )
        ),
        ("runs alone", None),
        ("runs + Tf-FD", None),
    ]
    table = Table([header for header, _ in columns], lines, [better for _, better in columns])
    empty = [
        header
        for header in ("published top-1, + Tf-FD [note]", *published_metric.values())
        if all(line[table.header.index(header)] == NONE for line in lines)
    ]
    if "published top-1, + Tf-FD [note]" in empty:  # a published method + Tf-FD is rare
        table.drop(table.header.index("Δ best, + Tf-FD − like-for-like published"))
    for header in empty:
        table.drop(table.header.index(header))
    if not any(line[1] for line in lines):
        table.drop(1)
    shown = {name for name, *_ in pairs}
    unshown = [
        (name if not plus else (TFFD if name == SELFKD_NAMES["ce"] else f"{name} + {TFFD}"), number)
        for name in dict.fromkeys(SELFKD_NAMES.values())
        if name not in shown
        for plus in (False, True)
        for number in published_for(name, context.dataset, plus)
        if number.model == context.model
    ]
    table.after += _labelled_numbers(
        f"Also published for {context.model} on {context.dataset}, without runs here", unshown, context, notes
    )
    table.after += _labelled_numbers(
        f"Published for {context.model} on {context.dataset} with no config here (references)",
        [(reference.label, reference.number) for reference in references(context.dataset, context.model)],
        context,
        notes,
    )
    for (source, _, _, verdict), index in notes.items():
        table.after.append(f"[{index}] {source}. {verdict}")
    return table, any(verdict.startswith("Like") for *_, verdict in notes)


def _verdict(number: Published, context: SelfKDContext) -> str:
    if follows(number, context.dataset, context.model, context.settings):
        return "Like-for-like with these runs: same backbone and protocol."
    reasons = (
        [] if number.model == context.model else [f"another backbone ({number.backbone}; these runs: {context.model})"]
    )
    if number_schedule(number) is None:
        reasons.append("another protocol")
    elif number.model == context.model:
        reasons.append("these runs do not follow its protocol")
    return "† Not like-for-like: " + ", ".join(reasons) + "."


def _published_numbers(
    numbers,
    context: SelfKDContext,
    notes: dict,
    value=lambda number: number.top1,
    digits: int = 2,
    with_baseline: bool = True,
) -> list[str]:
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


def _labelled_numbers(
    heading: str, labelled: list[tuple[str, Published]], context: SelfKDContext, notes: dict
) -> list[str]:
    """One note line listing labelled published numbers ("label 72.86 (CE 71.14) [3]†; ..."), or none."""
    items = [f"{label} {cell}" for label, number in labelled for cell in _published_numbers([number], context, notes)]
    return [f"{heading}: " + "; ".join(items) + "."] if items else []


def _selfkd_line(
    name: str,
    settings: str,
    alone: Row | None,
    with_tffd: Row | None,
    context: SelfKDContext,
    notes: dict,
    metrics: tuple[Metric, ...],
) -> list:
    published = [published_for(name, context.dataset, plus, context.model) for plus in (False, True)]
    cells = [_published_cell(numbers, context, notes) for numbers in published]
    like = like_for_like(alone) if alone else None
    like_tffd = like_for_like(with_tffd) if with_tffd else None
    alone_best, tffd_best = stat_of(alone, "best").mean, stat_of(with_tffd, "best").mean
    return [
        name,
        settings,
        *(stat_of(row, which) for row in (alone, with_tffd) for which in ("last", "best")),
        Stat(difference(tffd_best, alone_best), signed=True),
        cells[0],
        Stat(difference(alone_best, like.top1 if like else None), signed=True),
        cells[1],
        Stat(difference(tffd_best, like_tffd.top1 if like_tffd else None), signed=True),
        *(
            cell
            for metric in metrics
            for cell in (
                *(stat_of(row, which, metric) for row in (alone, with_tffd) for which in ("last", "best")),
                "; ".join(
                    _published_numbers(
                        published[0],
                        context,
                        notes,
                        lambda number, key=metric.key: getattr(number, key),
                        metric.digits,
                        with_baseline=False,
                    )
                )
                or NONE,
            )
        ),
        alone.status() if alone else "–",
        with_tffd.status() if with_tffd else "–",
    ]
