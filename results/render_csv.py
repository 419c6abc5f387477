"""Every row (of the Tf-FD paper's table, the self-distillation tables and the sweeps) as one flat CSV table:
the numbers unrounded, empty where there is none, with the published numbers shown beside each row."""

from __future__ import annotations

import csv
import io

from results.aggregate import Row, varying_settings
from results.compare import other_published
from results.numbers import Metric, describe, difference


def csv_text(rows: list[Row], metrics: tuple[Metric, ...]) -> str:
    """Every row (of both tables and the sweeps) as one CSV table; the numbers unrounded, none left empty."""
    extra = [
        f"{which}_{metric.key}_{part}" for metric in metrics for which in ("last", "best") for part in ("mean", "std")
    ]
    columns = [
        "dataset",
        "model",
        "method",
        "teacher",
        "teacher_acc1",
        "protocol",
        "batch_size",
        "lr",
        "epochs",
        "settings",
        "seeds",
        "finished",
        "runs",
        "last_mean",
        "last_std",
        "best_mean",
        "best_std",
        *extra,
        "paper",
        "diff_last",
        "diff_best",
        "status",
        "run_dirs",
        "paper_source",
        "published_other",
    ]
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
        writer.writerow(
            {
                "dataset": row.dataset,
                "model": row.model,
                "method": row.method,
                "teacher": row.teacher or "",
                "teacher_acc1": row.teacher_acc1(),
                "protocol": row.trained_under(),
                "batch_size": row.settings.get("train.batch_size"),
                "lr": row.settings.get("train.lr"),
                "epochs": row.settings.get("train.epochs"),
                "settings": describe(varying_settings(rows, row)),
                "seeds": " ".join(str(run.seed) for run in row.runs),
                "finished": sum(r.finished for r in row.runs),
                "runs": len(row.runs),
                "last_mean": last,
                "last_std": last_std,
                "best_mean": best,
                "best_std": best_std,
                **numbers,
                "paper": row.paper,
                "diff_last": difference(last, row.paper),
                "diff_best": difference(best, row.paper),
                "status": row.status(),
                "run_dirs": " ".join(str(run.run_dir) for run in row.runs),
                "paper_source": row.paper_source,
                "published_other": " | ".join(f"{number.top1} ({number.source})" for number in other_published(row)),
            }
        )
    return out.getvalue()
