"""One training session end to end: config -> distributed setup -> build -> run directory -> train.

Everything that can fail on bad input (config, data, checkpoints, run directory) is checked before
the first byte is written, so a failed start leaves no half-made run directory behind.
"""

from __future__ import annotations

import errno
import os
import platform
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

from core.errors import DiskFullError, RunDirError
from core.typed_config import to_dict

from .builder import build_experiment
from .checkpoint import atomic_write, remove_unfinished_writes
from .config import load_config
from .distributed import barrier, broadcast_from_main, environment_ranks, init_distributed, shutdown
from .hparams import HPARAM_METRICS, tensorboard_hparams
from .logger import NullLogger, RunLogger
from .previous_run import pending, set_aside, settle
from .resume import load_resume_state
from .run_dir import (
    CONFIG_FILE,
    LAST,
    RunLock,
    check_run_dir,
    check_run_paths,
    check_writable,
    clear_run_files,
    default_run_dir,
)
from .trainer import NonFiniteLoss, Trainer


def run_experiment(config_path: str, overrides: list[str], run_dir: str | None, overwrite: bool) -> int:
    config = load_config(config_path, overrides)
    run_dir = Path(run_dir) if run_dir else default_run_dir(config_path, overrides)
    resolved = to_dict(config)
    check_writable(run_dir)  # these raise before anything is built or written
    check_run_paths(run_dir)
    if not pending(run_dir):
        check_run_dir(run_dir, overwrite, resolved)
    elif environment_ranks()[0] == 0:  # an --overwrite killed before its first checkpoint: finish or undo it
        with RunLock(run_dir):
            report_settled(run_dir, settle(run_dir))
        check_run_dir(run_dir, overwrite, resolved)
    # (other ranks leave a directory rank 0 is settling alone: rank 0 decides under the lock, for all)
    dist = init_distributed(config.train.device)
    code = _run(config, resolved, dist, run_dir, overwrite, [o.partition("=")[0].strip() for o in overrides])
    # Only after a run that returned: after an exception, other ranks may sit in a collective that never
    # completes, and a teardown could wait for them forever. Exiting closes this rank's connections
    # instead, so its peers fail at once and torchrun ends the job.
    shutdown()
    return code


def _run(config, resolved: dict, dist, run_dir: Path, overwrite: bool, override_keys: list[str]) -> int:
    experiment = build_experiment(config, dist)  # before the run directory is touched: its errors are its own
    with run_dir_faults(run_dir):
        return _run_in(config, resolved, dist, experiment, run_dir, overwrite, override_keys)


@contextmanager
def run_dir_faults(run_dir: Path):
    """A full disk, or the run directory deleted or made read-only, while the run writes into it: one line
    saying where, and what of ``last.pt`` is left; every other OSError as it is."""
    try:
        yield
    except OSError as error:
        writing = os.fsdecode(error.filename) if error.filename else "its log or TensorBoard events"
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"no space left on the disk holding {run_dir} (writing {writing}); "
                f"{kept_checkpoint(run_dir)}. Free some space and run the same command again"
            ) from None
        if lost_while_training(run_dir, error):
            raise RunDirError(
                f"{run_dir} was deleted, or made read-only, while the run trained (writing {writing}: "
                f"{error.strerror}); {kept_checkpoint(run_dir)}. Restore the directory (or its "
                f"permissions) and run the same command again"
            ) from None
        raise


# What writing into a run directory that was deleted, or made read-only, while the run trained raises.
DIRECTORY_LOST = (errno.ENOENT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR)


def lost_while_training(run_dir: Path, error: OSError) -> bool:
    """Whether ``error`` is a write into ``run_dir`` (checked writable before the run began) that failed
    because the directory went away or read-only since."""
    if error.errno not in DIRECTORY_LOST:
        return False
    if error.filename is None:  # a file object's write or close: ours are all in the run directory
        return error.errno == errno.EROFS or not os.access(run_dir, os.W_OK | os.X_OK)
    return Path(os.fsdecode(error.filename)).resolve().parent == run_dir.resolve() or not run_dir.is_dir()


def kept_checkpoint(run_dir: Path) -> str:
    last = run_dir / LAST
    if last.is_file():
        return f"{last} is intact and holds the last finished epoch"
    return (
        "the directory is gone, and its last.pt with it"
        if not run_dir.is_dir()
        else "no epoch had finished, so there is no checkpoint"
    )


def _run_in(config, resolved: dict, dist, experiment, run_dir: Path, overwrite: bool, override_keys: list[str]) -> int:
    lock = RunLock(run_dir)
    mode = None
    if dist.is_main:
        lock.acquire()
        try:  # again, holding the lock: a run that held it meanwhile may have finished this directory
            report_settled(run_dir, settle(run_dir))
            mode = check_run_dir(run_dir, overwrite, resolved)
        except BaseException:
            lock.release()
            raise
    mode = broadcast_from_main(mode)
    try:
        # Every rank reads the checkpoint it resumes from before rank 0 writes anything.
        resume_state = (
            load_resume_state(
                run_dir / LAST,
                dist.world_size,
                experiment,
                resolved,
                config_file_checked=(run_dir / CONFIG_FILE).is_file(),
            )
            if mode == "resume"
            else None
        )
        if dist.is_main:
            remove_unfinished_writes(run_dir)
            if mode == "overwrite":
                set_aside(run_dir)  # kept until this run's first checkpoint (engine/previous_run.py)
            elif mode == "restart":
                clear_run_files(run_dir)
            text = yaml.safe_dump(resolved, sort_keys=False)
            atomic_write(run_dir / CONFIG_FILE, lambda out: out.write(text.encode()))
        barrier()
        purge_step = resume_state["global_step"] + 1 if resume_state is not None else None
        logger = RunLogger(run_dir, purge_step) if dist.is_main else NullLogger()
        try:
            logger.info(header(config, resolved, experiment, dist, run_dir, mode))
            logger.start_hparams(tensorboard_hparams(config, override_keys), list(HPARAM_METRICS))
            trainer = Trainer(config, experiment, dist, run_dir, logger, resume_state)
            try:
                return trainer.fit()
            except NonFiniteLoss as error:
                logger.error(str(error))
                return error.exit_code
        finally:
            logger.close()
    finally:
        if dist.is_main and lock.held:
            undo_unfinished_overwrite(run_dir)
        lock.release()


def undo_unfinished_overwrite(run_dir: Path) -> None:
    """After a run that ended (in any way) before its first checkpoint: the files it replaced come back."""
    if not pending(run_dir):
        return
    try:
        report_settled(run_dir, settle(run_dir))
    except OSError:
        pass  # the directory went away or read-only: what is set aside stays, and the next run settles it


def report_settled(run_dir: Path, outcome: str | None) -> None:
    if outcome == "restored":
        print(f"{run_dir}: the previous run's files are back (an --overwrite run wrote no checkpoint)", flush=True)


def term_parameters(experiment) -> str:
    """The loss terms' own parameters (e.g. BYOT's heads), which train with the model but are not exported;
    frozen ones (MixSKD's random discriminators) counted apart."""
    params = [p for term in experiment.terms for p in term.parameters()]
    trained = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    parts = [f"{trained / 1e6:.3f}M in loss terms, trained, not exported"] if trained else []
    parts += [f"{frozen / 1e6:.3f}M frozen"] if frozen else []
    return f" (+{', '.join(parts)})" if parts else ""


def header(config, resolved: dict, experiment, dist, run_dir: Path, mode: str) -> str:
    profile, loaders = experiment.profile, experiment.loaders
    device = str(dist.device)
    if dist.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(dist.device)})"
    shapes = ", ".join(f"{c}@{h}x{w}" for c, h, w in profile.feature_shapes)
    return "\n".join(
        [
            f"run directory: {run_dir} ({mode})",
            "resolved config:",
            yaml.safe_dump(resolved, sort_keys=False).rstrip(),
            f"model: {config.model.name}, {profile.parameters / 1e6:.3f}M parameters{term_parameters(experiment)}, "
            f"{profile.forward_flops / 1e6:.1f}M FLOPs per image forward ({profile.forward_flops / 2e6:.1f}M MACs), "
            f"stage features {shapes}",
            f"loss terms: {', '.join(config.loss.terms)}"
            + (f"; teacher {config.teacher.model}" if experiment.teacher is not None else ""),
            f"data: {config.data.name}, {loaders.num_train} train / {loaders.num_test} test images, "
            f"{loaders.num_classes} classes, {type(loaders.train).__name__}",
            f"device: {device}, {dist.world_size} process(es), torch {torch.__version__}, "
            f"python {platform.python_version()}, lr {experiment.lr:g}, global batch {config.train.batch_size}",
        ]
    )
