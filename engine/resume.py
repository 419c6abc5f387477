"""The run checkpoint a resume starts from: its format, and the checks made before a resumed run writes
anything (the checkpoint's format and number of processes, the config it was trained under, its model)."""

from __future__ import annotations

from pathlib import Path

from core.errors import CheckpointError

from .builder import Experiment
from .checkpoint import check_fits, check_trained_for, load_checkpoint, state_dict_from
from .run_dir import CONFIG_FILE, check_same_config

CHECKPOINT_FORMAT = 2  # 2: the lr schedule steps per batch (engine/schedule.py)


def with_plan_state(state: dict) -> dict:
    """A run checkpoint from before the batch plans (data/plans/) kept DLB's last batch as its loss term's
    per-rank state (``"rank_terms"``): that state is the ``last_batch`` plan's now (``"rank_plan"``)."""
    if not state.get("rank_terms"):
        return state
    terms = [{key: value for key, value in term.items() if key != "_extra_state"} for term in state["terms"]]
    rank_plan = [{"_extra_state": dlb_memory(term_states)} for term_states in state["rank_terms"]]
    return {
        **{key: value for key, value in state.items() if key != "rank_terms"},
        "terms": terms,
        "rank_plan": rank_plan,
    }


def dlb_memory(term_states: list) -> dict:
    """DLB's memory in one rank's ``"rank_terms"`` entry: the extra state of its one per-rank term."""
    return next(term["_extra_state"] for term in term_states if term is not None and "_extra_state" in term)


def load_resume_state(
    path: Path,
    world_size: int = 1,
    experiment: Experiment | None = None,
    config: dict | None = None,
    config_file_checked: bool = True,
) -> dict:
    """The run checkpoint a resume starts from, checked before the run writes anything: its format, its
    number of processes and, when given, the ``config`` (resolved) it was trained under and that its model
    weights fit ``experiment``'s model. ``config_file_checked``: the run directory's config.yaml was
    compared already; a checkpoint from before they recorded their config is refused without it."""
    try:
        state = load_checkpoint(path, "run checkpoint")
    except CheckpointError as error:
        raise CheckpointError(f"{error}; pass --overwrite to start the run over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a run checkpoint of format {CHECKPOINT_FORMAT} "
            f"(resume needs one); pass --overwrite to start over"
        )
    state = with_plan_state(state)
    saved_ranks = len(state.get("rank_plan") or []) or world_size
    if saved_ranks != world_size:
        raise CheckpointError(
            f"{path} holds the per-process state of the batch plan (batch.plan) from {saved_ranks} "
            f"processes; resume it with {saved_ranks} (torchrun --nproc_per_node {saved_ranks}), "
            f"or pass --overwrite to start over"
        )
    if config is not None:
        if isinstance(state.get("config"), dict):
            check_same_config(Path(path).parent, state["config"], config)
        elif not config_file_checked:
            raise CheckpointError(
                f"{path} does not record the config it was trained under (an older checkpoint) and "
                f"{Path(path).parent / CONFIG_FILE} is gone; put that file back, "
                f"or pass --overwrite to start over"
            )
    if experiment is not None:
        try:
            model_name = (config or {}).get("model", {}).get("name")
            check_trained_for(state, model_name, experiment.loaders.num_classes, path, "run checkpoint")
            check_fits(experiment.model, state_dict_from(state, path, "run checkpoint"), path, "run checkpoint")
        except CheckpointError as error:
            raise CheckpointError(f"{error}; pass --overwrite to start over, or choose another --run-dir") from None
    return state
