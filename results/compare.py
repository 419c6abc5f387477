"""Which published numbers a row is compared with: a self-KD table's numbers of a method (alone or + Tf-FD) on
its dataset and backbone, whether runs are like-for-like with a number (same backbone, dataset and protocol),
and the numbers shown beside a row other than its paper column's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from results.methods import CIFAR_RESNET18S
from results.protocols import SCHEDULES, SELFKD_PROTOCOLS, schedule_deviations
from results.published import Published, ijcnn_published, selfkd_published

if TYPE_CHECKING:
    from results.aggregate import Row


def published_for(name: str, dataset: str, with_tffd: bool = False, model: str | None = None) -> tuple[Published, ...]:
    """The published numbers shown in a self-KD table on ``dataset``: the dataset's own, or CIFAR-100's for
    a dataset without a protocol here (as a reference, never like-for-like); with ``model``, only those of
    that backbone, of a backbone without a model here, or of the literature's CIFAR ResNet-18 (shown beside
    every CIFAR table)."""
    numbers = selfkd_published(name, dataset if dataset in SELFKD_PROTOCOLS else "cifar100", with_tffd)
    return tuple(number for number in numbers if model is None or number.model in (model, None, *CIFAR_RESNET18S))


def number_schedule(number: Published) -> Path | None:
    """The schedule file of the protocol ``number`` was trained under, where one of ours follows it."""
    if number.schedule:
        return SCHEDULES.parent / number.schedule
    return SELFKD_PROTOCOLS[number.dataset][0] if number.selfkd_protocol else None


def follows(number: Published, dataset: str, model: str, settings: dict) -> bool:
    """Runs of ``model`` on ``dataset`` with these settings are like-for-like with ``number``: same backbone,
    dataset and protocol."""
    schedule = number_schedule(number)
    return (
        number.model == model
        and number.dataset == dataset
        and schedule is not None
        and not schedule_deviations(schedule, settings)
    )


def like_for_like(row: Row) -> Published | None:
    """The published number of the same method (alone or + Tf-FD), dataset, backbone and protocol as ``row``."""
    if row.selfkd is None:
        return None
    return next(
        (
            published
            for published in published_for(row.selfkd.name, row.dataset, row.selfkd.with_tffd)
            if follows(published, row.dataset, row.model, row.settings)
        ),
        None,
    )


def other_published(row: Row) -> tuple[Published, ...]:
    """The published numbers shown beside ``row`` other than the one in its paper column."""
    if row.selfkd is None:
        return ijcnn_published(row.dataset, row.model, row.method, row.teacher)
    like = like_for_like(row)
    return tuple(
        number
        for number in published_for(row.selfkd.name, row.dataset, row.selfkd.with_tffd, row.model)
        if number is not like
    )
