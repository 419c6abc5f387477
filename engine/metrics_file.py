"""What a run's ``metrics.json`` may hold: the type of each key the trainer writes (engine/trainer.py
``_metrics``), checked whenever the file is read, so that a damaged or hand-edited file is one line naming
it, never a traceback in whatever reads a number from it. Keys it does not know are left alone."""

from __future__ import annotations

from core.errors import shown

_RATES = ("acc1", "acc5", "nll", "ece", "aurc")
NUMBERS = ("wall_time_s", "teacher_acc1", *(f"{which}_{key}" for which in ("best", "last") for key in _RATES))
COUNTS = ("best_epoch", "epochs_done", "epochs_total", "test_samples", "train_samples", "world_size")


def _number_problem(value, integer: bool) -> str | None:
    """Why ``value`` is not a number (an integer where ``integer``) or null, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return f"{shown(value)} is not {'an integer' if integer else 'a number'}"
    return None  # NaN and Inf too: json writes them, and an evaluation may give them


def metrics_problem(metrics: dict) -> str | None:
    """What is wrong with the content of a parsed ``metrics.json`` object, or None."""
    for key in NUMBERS + COUNTS:
        problem = _number_problem(metrics.get(key), integer=key in COUNTS)
        if problem:
            return f"{key}: {problem}"
    if not isinstance(metrics.get("finished", False), bool):
        return f"finished: {shown(metrics['finished'])} is not true or false"
    if not isinstance(metrics.get("stopped_by", ""), (str, type(None))):
        return f"stopped_by: {shown(metrics['stopped_by'])} is not text"
    history = metrics.get("history", [])
    if not isinstance(history, list):
        return f"history: {shown(history)} is not a list"
    for index, record in enumerate(history):
        if not isinstance(record, dict):
            return f"history[{index}]: {shown(record)} is not an object"
        for key, value in record.items():
            problem = _number_problem(value, integer=key in ("epoch", "test_samples"))
            if problem:
                return f"history[{index}].{shown(key)[1:-1]}: {problem}"
    return None
