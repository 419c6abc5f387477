"""Any timm model as a backbone: ``model.name=timm/<architecture>`` (any name ``timm.list_models()`` knows).

The network is timm's own, built by ``timm.create_model(architecture, num_classes=K, **model.timm_kwargs)``
and left untouched; ``TimmBackbone`` only reads it through timm's own interface:

- stage features: ``forward_intermediates`` at the indices ``model.timm_stages`` names (its feature_info
  entries), by default the model's own stages (feature_info without the stem), or, for a plain model whose
  blocks all keep one resolution (ViT, DeiT), 4 evenly spaced blocks; maps are N x C x H x W, ViT tokens
  included (timm reshapes the patch tokens; prefix tokens are dropped);
- the head map: timm's pre-logits (``forward_head(..., pre_logits=True)``: its pooling, norms and dropout),
  as an N x D x 1 x 1 map, so ``StepOutput.embedding`` is the vector the classifier reads;
- the logits: the model's classifier (``get_classifier()``) on that vector, i.e. timm's own ``forward_head``.

Its state_dict is exactly timm's (a state-dict hook drops the wrapper's ``net.`` prefix, a load hook adds
it), so an exported best.pt's ``model`` loads into ``timm.create_model(architecture, num_classes=K,
**kwargs)`` unchanged, and a timm .pth/.safetensors file loads through ``model.weights``.

Nothing reaches the network: timm is imported with ``HF_HUB_OFFLINE=1`` and always built with
``pretrained=False``; weights come from a local file only. timm is imported only when a timm model is
built (or named), never by commands that build none.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Sequence

import torch
import torch.nn as nn

from core.errors import ConfigError, shown

from .layers import Backbone

PREFIX = "timm/"
NUM_PLAIN_STAGES = 4  # the blocks taken as stages of a model whose blocks all keep one resolution (ViT)
# timm.create_model arguments that the config sets otherwise: the dataset's classes, local weight files.
_RESERVED = {
    "num_classes": "the number of classes comes from the dataset",
    "pretrained": "weights come from a local file only: model.weights=PATH (a timm .safetensors or .pth)",
    "pretrained_cfg": "weights come from a local file only: model.weights=PATH",
    "pretrained_cfg_overlay": "weights come from a local file only: model.weights=PATH",
    "checkpoint_path": "weights come from a local file only: model.weights=PATH",
    "cache_dir": "nothing is downloaded: weights come from a local file, model.weights=PATH",
    "features_only": "the model is used whole; its stages are chosen by model.timm_stages",
    "out_indices": "its stages are chosen by model.timm_stages",
    "feature_cls": "the model is used whole; its stages are chosen by model.timm_stages",
}
_HUB_REFERENCE = re.compile(r"^(hf[-_]hub:|https?://)", re.IGNORECASE)
# feature_info entries before a model's first stage (ResNet's act1, RegNet's stem, DenseNet's norm0)
_STEM = re.compile(r"^(stem|act1|bn1|conv1)(\.|_|$)|(^|\.)norm0$")


def is_timm_name(name: str) -> bool:
    return name.startswith(PREFIX)


def check_options(name: str, weights: str | None, kwargs: dict, stages: list[int]) -> None:
    """What the config alone says is wrong (no timm import): reserved keyword arguments, hub references
    as weights, timm options on a model that is not timm's, stage indices out of order."""
    if weights and _HUB_REFERENCE.match(weights):
        raise ConfigError(
            f"model.weights={shown(weights)} names weights on a hub, and nothing here downloads "
            "(HF_HUB_OFFLINE=1): fetch the file on a machine with a network and give its local path "
            "(a timm .safetensors or .pth)"
        )
    for key in kwargs:
        if key in _RESERVED:
            raise ConfigError(f"model.timm_kwargs.{key} is not allowed: {_RESERVED[key]}")
    if not is_timm_name(name) and (kwargs or stages):
        which = "model.timm_kwargs" if kwargs else "model.timm_stages"
        raise ConfigError(f"{which} applies to timm models only (model.name=timm/<architecture>), not {shown(name)}")
    if stages != sorted(set(stages)):
        raise ConfigError(f"model.timm_stages must be increasing, got {shown(stages)}")


def import_timm():
    """timm, imported offline: huggingface_hub reads HF_HUB_OFFLINE when it is first imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import timm

    return timm


def check_architecture(name: str) -> str:
    """The architecture of ``timm/<architecture>``; an unknown one is a ``ConfigError`` with the nearest names."""
    timm = import_timm()
    architecture = name[len(PREFIX) :]
    known = timm.list_models()
    if architecture.split(".")[0] not in known:  # a ".tag" only selects pretrained weights, which come from a file
        nearest = difflib.get_close_matches(architecture, known, n=3, cutoff=0.5)
        hint = f"; nearest: {', '.join(PREFIX + n for n in nearest)}" if nearest else ""
        raise ConfigError(
            f"model.name={shown(name)}: timm {timm.__version__} has no architecture {shown(architecture)}{hint}"
        )
    return architecture


def default_stages(feature_info: Sequence[dict]) -> list[int]:
    """The model's own stages: feature_info without the stem; for a plain model (every entry at one
    resolution, one per block: ViT, DeiT) ``NUM_PLAIN_STAGES`` evenly spaced blocks, the last one included."""
    count = len(feature_info)
    if count > NUM_PLAIN_STAGES and len({info["reduction"] for info in feature_info}) == 1:
        return [(i + 1) * count // NUM_PLAIN_STAGES - 1 for i in range(NUM_PLAIN_STAGES)]
    return [index for index, info in enumerate(feature_info) if not _STEM.search(info["module"])]


def _drop_prefix(module, state_dict, prefix, local_metadata) -> None:
    inner = prefix + "net."
    for key in [key for key in state_dict if key.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)


def _add_prefix(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    inner = prefix + "net."
    for key in [key for key in state_dict if key.startswith(prefix) and not key.startswith(inner)]:
        state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)


class TimmBackbone(Backbone):
    """A timm model, read through ``forward_intermediates``, ``forward_head`` and ``get_classifier``."""

    # Terms this model cannot serve, and why (engine/builder.py refuses a config that lists them).
    refuses_terms = {
        "zipf_ls": "zipf_ls classifies every pixel of the map a classifier pools, and a timm model's classifier "
        "reads timm's pooled pre-logits (its head's pooling, norms and dropout taken whole): there is "
        "no per-pixel map to vote with",
    }

    def __init__(self, net: nn.Module, stage_indices: Sequence[int]):
        super().__init__()
        self.net = net
        self.stage_indices = list(stage_indices)
        self.register_state_dict_post_hook(_drop_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)

    def forward_maps(self, x: torch.Tensor):
        final, feats = self.net.forward_intermediates(x, indices=self.stage_indices, output_fmt="NCHW")
        pre_logits = self.net.forward_head(final, pre_logits=True).flatten(1)
        return list(feats), pre_logits[:, :, None, None]

    def classify_map(self, head_map: torch.Tensor) -> torch.Tensor:
        return self.net.get_classifier()(head_map.flatten(1))


def build_timm_model(
    name: str, num_classes: int, timm_kwargs: dict | None = None, timm_stages: Sequence[int] = ()
) -> TimmBackbone:
    """``timm.create_model(architecture, pretrained=False, num_classes=num_classes, **timm_kwargs)`` in our
    model contract; what timm refuses about the keyword arguments is one ``ConfigError``."""
    kwargs = dict(timm_kwargs or {})
    check_options(name, None, kwargs, list(timm_stages))
    timm = import_timm()
    architecture = check_architecture(name)
    try:
        net = timm.create_model(architecture, pretrained=False, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"timm cannot build {architecture} with model.timm_kwargs={shown(kwargs)}: {reason}"
        ) from None
    if not hasattr(net, "forward_intermediates") or not hasattr(net, "feature_info"):
        raise ConfigError(
            f"model.name={name}: timm's {architecture} has no forward_intermediates, so its stage "
            "features cannot be read; choose another architecture"
        )
    if not isinstance(net.get_classifier(), nn.Module):
        raise ConfigError(
            f"model.name={name}: timm's {architecture} has more than one classifier (a distilled "
            "model's two heads); choose its plain variant"
        )
    count = len(net.feature_info)
    stages = list(timm_stages) or default_stages(net.feature_info)
    if not stages or stages[-1] >= count:
        raise ConfigError(
            f"model.timm_stages={shown(list(timm_stages))}: timm's {architecture} has {count} "
            f"intermediates (indices 0..{count - 1}: "
            f"{', '.join(info['module'] for info in net.feature_info)})"
        )
    return TimmBackbone(net, stages)


def check_model_serves_terms(model: nn.Module, terms: Sequence[str], name: str) -> None:
    """Refuse loss terms that the model declares it cannot serve (``refuses_terms``), in one line."""
    for term in terms:
        reason = getattr(model, "refuses_terms", {}).get(term)
        if reason:
            raise ConfigError(f"loss.{term} cannot train model.name={name}: {reason}")
