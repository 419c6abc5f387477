"""Backbones that return ``(logits, stage_features)``; see ``build_model``."""

from . import cifar_resnet, imagenet, mobilenetv2, preact_resnet, shufflenetv1, shufflenetv2, vgg, wrn  # noqa: F401  (registers models)
from .registry import MODELS, build_configured_model, build_model, register_model

__all__ = ["MODELS", "build_configured_model", "build_model", "register_model"]
