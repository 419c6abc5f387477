"""The run's row in TensorBoard's HParams tab: which hyper-parameters tell the runs of a sweep or a table
apart, as flat scalars."""

from __future__ import annotations

from core.typed_config import flatten, to_dict

from .run_dir import RESUME_MAY_CHANGE

HPARAM_METRICS = ("hparam/best_acc1", "hparam/last_acc1")  # per epoch: the best so far and this epoch's
IDENTITY_KEYS = ("seed", "model.name", "data.name", "loss.terms")  # in every HParams row


def tensorboard_hparams(config, override_keys=()) -> dict:
    """The hyper-parameters of the run's HParams row, which tell the runs of a sweep or a table apart:
    the identity keys, the keys set on the command line (a sweep's axes) and those set away from the
    defaults, but no paths."""
    defaults = hparams_of(type(config)())
    return {
        key: value
        for key, value in hparams_of(config).items()
        if key in IDENTITY_KEYS
        or (key not in RESUME_MAY_CHANGE and (key in override_keys or value != defaults.get(key)))
    }


def hparams_of(config) -> dict:
    """Flat scalar hyper-parameters for TensorBoard's HParams tab (lists and nulls as strings)."""
    return {
        key: value if isinstance(value, (int, float, str, bool)) else str(value)
        for key, value in flatten(to_dict(config)).items()
    }
