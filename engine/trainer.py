"""The training loop. Reads top to bottom: maybe resume -> epoch loop (train, evaluate, record) -> finish.

Loss terms are opaque here: each returns named, weighted scalars that are summed and logged by name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from core.typed_config import to_dict
from losses.base import epoch_tensor

from .builder import Experiment
from .calibration import aurc, calibration_sums, confidences_and_hits, expected_calibration_error
from .checkpoint import (
    atomic_write,
    save_checkpoint,
    unwrap,
)
from .distributed import DistContext, all_reduce_sum, any_rank, broadcast_buffers, gather_objects
from .hparams import HPARAM_METRICS
from .meters import DeviceMeter, add_sums, correct_topk, means
from .previous_run import drop_previous
from .resume import CHECKPOINT_FORMAT
from .run_dir import BEST, LAST, METRICS_FILE
from .signals import StopRequest
from .step import apply_gradients, compute_losses


class NonFiniteLoss(Exception):
    exit_code = 1


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format
) -> dict:
    """Top-1/top-5, NLL (mean cross-entropy), ECE and AURC (engine/calibration.py) over the whole test
    split, exact over ranks: the sums and ECE's bin sums are all-reduced, AURC's confidences gathered.

    The model runs in eval mode (BatchNorm's running statistics, not the test batch's) and is put
    back in its previous mode afterwards. It may return logits or ``(logits, stage_features)``."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, device=device)  # loss, hits@1, hits@5, count
    confidences, hits = [torch.zeros(0, device=device)], [torch.zeros(0, dtype=torch.bool, device=device)]
    try:
        for images, targets in loader:
            output = model(images.contiguous(memory_format=memory_format))
            logits = (output[0] if isinstance(output, tuple) else output).float()
            loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
            sums += torch.cat([loss.view(1), correct_topk(logits, targets), sums.new_full((1,), targets.shape[0])])
            confidence, hit = confidences_and_hits(logits, targets)
            confidences.append(confidence)
            hits.append(hit)
    finally:
        model.train(was_training)
    loss, hits1, hits5, count = all_reduce_sum(sums).tolist()
    confidence, hit = torch.cat(confidences), torch.cat(hits)  # this rank's shard (possibly empty)
    ece = expected_calibration_error(all_reduce_sum(calibration_sums(confidence, hit)))
    gathered = gather_objects((confidence.cpu(), hit.cpu()))  # ~1e4 floats, once per evaluation
    area = aurc(torch.cat([c for c, _ in gathered]), torch.cat([h for _, h in gathered]))
    count = max(count, 1)
    return {
        "loss": loss / count,
        "nll": loss / count,
        "acc1": 100 * hits1 / count,
        "acc5": 100 * hits5 / count,
        "ece": ece,
        "aurc": area,
        "count": int(count),
    }


class Trainer:
    def __init__(
        self, config, experiment: Experiment, dist: DistContext, run_dir: Path, logger, resume_state: dict | None
    ):
        self.config, self.exp, self.dist = config, experiment, dist
        self.run_dir, self.log, self.resume_state = Path(run_dir), logger, resume_state
        self.train_cfg = config.train
        self.device = dist.device
        # Evaluation needs no DDP (no gradients to reduce; every rank sees its own shard of the test set)
        # and runs the plain module, so that it never goes through a compiled DDP wrapper.
        self.eval_model = experiment.model
        self.history: list[dict] = []
        self.best_acc1, self.best_epoch = -1.0, 0
        self.global_step = 0
        self.wall_time = 0.0
        self.teacher_acc1: float | None = None
        self.skipped_reported = 0

    # ------------------------------------------------------------------ the run
    def fit(self) -> int:
        start_epoch = self._restore(self.resume_state) + 1 if self.resume_state is not None else 1
        epochs = self.train_cfg.epochs
        if self.exp.teacher is not None:
            teacher = evaluate(self.exp.teacher, self.exp.loaders.test, self.device, self.exp.memory_format)
            self.log.info(
                f"teacher {self.config.teacher.model}: test top-1 {teacher['acc1']:.2f}%, "
                f"top-5 {teacher['acc5']:.2f}% ({self.config.teacher.checkpoint})"
            )
            self.teacher_acc1 = teacher["acc1"]
        if start_epoch > 1:
            self.log.info(f"resuming after epoch {start_epoch - 1} from {self.run_dir / LAST}")
        stopped = None
        with StopRequest() as stop:
            for epoch in range(start_epoch, epochs + 1):
                began = time.perf_counter()
                train = self._train_epoch(epoch, stop)
                if train is None:
                    stopped = stop
                    break
                train_seconds = time.perf_counter() - began
                broadcast_buffers(unwrap(self.exp.network))
                test = evaluate(self.eval_model, self.exp.loaders.test, self.device, self.exp.memory_format)
                self.wall_time += time.perf_counter() - began
                self._report_skipped_images(epoch)
                self._record(epoch, train, test, train_seconds, time.perf_counter() - began)
                if any_rank(stop.requested, self.device):
                    stopped = stop
                    break
        return self._finish(stopped)

    # ------------------------------------------------------------------ one epoch
    def _train_epoch(self, epoch: int, stop: StopRequest) -> dict | None:
        exp, cfg, device = self.exp, self.train_cfg, self.device
        exp.network.train()
        loader = exp.loaders.train
        loader.set_epoch(epoch)
        meter, totals = DeviceMeter(device), {}
        lr = exp.optimizer.param_groups[0]["lr"]
        last_time, last_count = time.perf_counter(), 0
        bar = tqdm(
            loader,
            total=len(loader),
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            dynamic_ncols=True,
            disable=None if self.dist.is_main else True,
        )
        epoch_value = epoch_tensor(epoch, device)  # once per epoch: the compiled step takes it as an input
        for step, (images, targets, indices) in enumerate(bar, 1):
            logits, losses, total, targets = compute_losses(exp, images, targets, epoch_value, indices)
            skipped = cfg.nonfinite == "skip" and any_rank(not bool(torch.isfinite(total)), device)
            if skipped:
                exp.optimizer.zero_grad(set_to_none=True)
                bad = ", ".join(n for n, v in losses.items() if not torch.isfinite(v)) or "on another rank"
                self.log.info(f"epoch {epoch} step {step}: non-finite loss, step skipped ({bad})")
            else:
                apply_gradients(exp, total)
            exp.scheduler.step()  # per batch, skipped ones included: the lr follows the batch index
            if skipped:
                continue
            meter.update({"loss": total, **losses}, logits, targets, step)
            self.global_step += 1
            at_interval = step % cfg.log_interval == 0
            if at_interval:
                sums = self._check_finite(meter.flush(reduce=self.dist.distributed), epoch)
                add_sums(totals, sums)
                now = time.perf_counter()
                rate = (totals["count"] - last_count) / max(now - last_time, 1e-9)
                last_time, last_count = now, totals["count"]
                point = means(sums, meter.names)
                self.log.scalars(
                    {**point, "lr": exp.optimizer.param_groups[0]["lr"], "images_per_s": rate},
                    self.global_step,
                    prefix="train/",
                )
                bar.set_postfix(loss=f"{point['loss']:.3f}", acc1=f"{point['acc1']:.1f}", refresh=False)
            if self._stop_now(stop, at_interval):
                bar.close()
                return None
        bar.close()
        add_sums(totals, self._check_finite(meter.flush(reduce=self.dist.distributed), epoch))
        result = means(totals, meter.names)
        result.setdefault("loss", float("nan"))  # train.nonfinite=skip skipped every step of this epoch
        result.update(lr=lr, count=totals["count"])
        return result

    def _stop_now(self, stop: StopRequest, at_interval: bool) -> bool:
        """One process stops after the current step; DDP ranks agree at log intervals (a collective),
        so that no rank is left waiting in a collective the others never join."""
        if not self.dist.distributed:
            return stop.requested
        return at_interval and any_rank(stop.requested, self.device)

    def _check_finite(self, sums: dict, epoch: int) -> dict:
        if sums["first_bad_step"] >= 0:
            kept = (
                f"the last good checkpoint is kept in {self.run_dir / LAST}"
                if (self.run_dir / LAST).is_file()
                else "no epoch had finished, so there is no checkpoint"
            )
            raise NonFiniteLoss(
                f"non-finite loss at epoch {epoch}, step {sums['first_bad_step']} "
                f"(bad: {', '.join(_bad_terms(sums['bad_names']))}); {kept}. "
                f"Lower the lr or the loss weights, or set train.nonfinite=skip to skip such steps"
            )
        return sums

    # ------------------------------------------------------------------ bookkeeping
    def _report_skipped_images(self, epoch: int) -> None:
        """The files a loader skipped this epoch (``data.skip_bad_images``; file-reading loaders only)."""
        loaders = self.exp.loaders
        skipped = [*getattr(loaders.train, "skipped", []), *getattr(loaders.test, "skipped", [])]
        new, self.skipped_reported = skipped[self.skipped_reported :], len(skipped)
        if new:
            self.log.info(
                f"epoch {epoch}: skipped {len(new)} unreadable image files (data.skip_bad_images), e.g. {new[0]}"
            )

    def _record(self, epoch: int, train: dict, test: dict, train_seconds: float, seconds: float) -> None:
        images_per_s = train["count"] / max(train_seconds, 1e-9)
        record = {
            "epoch": epoch,
            **{f"train_{k}": v for k, v in train.items() if k != "count"},
            **{f"test_{k}": v for k, v in test.items() if k != "count"},
            "test_samples": test["count"],
            "epoch_time_s": seconds,
            "images_per_s": images_per_s,
        }
        self.history.append(record)
        is_best = test["acc1"] > self.best_acc1
        if is_best:
            self.best_acc1, self.best_epoch = test["acc1"], epoch
        self.log.info(
            f"epoch {epoch}/{self.train_cfg.epochs}  loss {train['loss']:.4f}  train top-1 {train['acc1']:.2f}%  "
            f"test top-1 {test['acc1']:.2f}%  top-5 {test['acc5']:.2f}%  NLL {test['nll']:.3f}  "
            f"ECE {test['ece']:.2f}%  AURC {test['aurc']:.1f}  best {self.best_acc1:.2f}% (epoch "
            f"{self.best_epoch})  lr {train['lr']:.4g}  {seconds:.1f}s  {images_per_s:.0f} img/s"
        )
        self.log.scalars({k: v for k, v in train.items() if k != "count"}, epoch, prefix="epoch/train_")
        self.log.scalars({"images_per_s": images_per_s}, epoch, prefix="epoch/")
        self.log.scalars(
            {key: test[key] for key in ("acc1", "acc5", "loss", "nll", "ece", "aurc")}, epoch, prefix="test/"
        )
        self.log.scalars({tag: value for tag, value in zip(HPARAM_METRICS, (self.best_acc1, test["acc1"]))}, epoch)
        rank_plan = self._rank_plan_states()  # a collective: on every rank
        if self.dist.is_main:
            save_checkpoint(self.run_dir / LAST, self._state(epoch, rank_plan))
            if is_best:
                self._copy_last_to_best()
            self._write_metrics(finished=False)
            drop_previous(self.run_dir)  # an --overwrite run's first checkpoint: the old files may go
        self.log.flush()

    def _rank_plan_states(self) -> list | None:
        """Every rank's ``state_dict()`` of the batch plan, in rank order, where it carries state from step to
        step (DLB's last batch: each rank its own shard's); None where it has none."""
        if not self.exp.plan.state_dict():
            return None
        return gather_objects(self.exp.plan.state_dict())

    def _state(self, epoch: int, rank_plan: list | None = None) -> dict:
        exp = self.exp
        state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "global_step": self.global_step,
            "model": exp.model.state_dict(),
            "optimizer": exp.optimizer.state_dict(),
            "terms": [term.state_dict() for term in exp.terms],  # their parameters and per-sample state
            "rank_plan": rank_plan,
            "scheduler": exp.scheduler.state_dict(),
            "scaler": exp.scaler.state_dict(),
            "best_acc1": self.best_acc1,
            "best_epoch": self.best_epoch,
            "wall_time_s": self.wall_time,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "model_name": self.config.model.name,
            "num_classes": self.exp.loaders.num_classes,
            "config": to_dict(self.config),  # what it was trained under: a resume is checked against it
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def _restore(self, state: dict) -> int:
        exp = self.exp
        exp.model.load_state_dict(state["model"])
        for term, term_state in zip(exp.terms, state["terms"]):
            term.load_state_dict(term_state)
        if state.get("rank_plan"):  # this rank's own state of the batch plan (checked: same world size)
            exp.plan.load_state_dict(state["rank_plan"][self.dist.rank])
        exp.optimizer.load_state_dict(state["optimizer"])
        exp.scheduler.load_state_dict(state["scheduler"])
        exp.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.best_acc1, self.best_epoch = state["best_acc1"], state["best_epoch"]
        self.history, self.global_step = list(state["history"]), state["global_step"]
        self.wall_time = state.get("wall_time_s", 0.0)
        if self.best_epoch == state["epoch"] and self.dist.is_main:
            self._copy_last_to_best()  # a kill between the two writes left best.pt an epoch behind
        return int(state["epoch"])

    def _copy_last_to_best(self) -> None:
        atomic_write(self.run_dir / BEST, lambda out: out.write((self.run_dir / LAST).read_bytes()))

    def _metrics(self, finished: bool) -> dict:
        last = self.history[-1] if self.history else {}
        best = next((record for record in self.history if record["epoch"] == self.best_epoch), {})
        return {
            "best_acc1": self.best_acc1 if self.history else None,
            "best_epoch": self.best_epoch,
            "last_acc1": last.get("test_acc1"),
            "last_acc5": last.get("test_acc5"),
            **{
                f"{which}_{key}": record.get(f"test_{key}")
                for which, record in (("best", best), ("last", last))
                for key in CALIBRATION_KEYS
            },
            "epochs_done": len(self.history),
            "epochs_total": self.train_cfg.epochs,
            "finished": finished,
            "test_samples": last.get("test_samples"),
            "train_samples": self.exp.loaders.num_train,
            "world_size": self.dist.world_size,
            "wall_time_s": self.wall_time,
            "teacher_acc1": self.teacher_acc1,
            "history": self.history,
        }

    def _write_metrics(self, finished: bool, **extra) -> None:
        text = json.dumps({**self._metrics(finished), **extra}, indent=2) + "\n"
        atomic_write(self.run_dir / METRICS_FILE, lambda out: out.write(text.encode()))

    def _finish(self, stopped: StopRequest | None) -> int:
        done = len(self.history)
        finished = stopped is None and done == self.train_cfg.epochs
        if self.dist.is_main:
            self._write_metrics(finished, **({"stopped_by": stopped.signal_name} if stopped else {}))
        if finished:
            metrics = self._metrics(True)
            self.log.end_hparams()
            self.log.info(
                f"done: best test top-1 {metrics['best_acc1']:.2f}% (epoch {metrics['best_epoch']}), "
                f"last {metrics['last_acc1']:.2f}%\nrun directory: {self.run_dir}\n"
                f"curves: tensorboard --logdir {self.run_dir.parent}"
            )
            return 0
        signal_name = stopped.signal_name if stopped and stopped.signal_name else "a signal on another rank"
        self.log.info(
            f"stopped by {signal_name} after {done} finished epochs; {self.run_dir / LAST} holds "
            f"epoch {done}. Run the same command again to resume."
        )
        return stopped.exit_code if stopped else 1


def _bad_terms(names: list[str]) -> list[str]:
    """The loss terms that went non-finite; the total ("loss") only when every term was finite."""
    return [name for name in names if name != "loss"] or names


CALIBRATION_KEYS = ("nll", "ece", "aurc")  # metrics.json: best_<key> and last_<key>, of the best and last epochs
