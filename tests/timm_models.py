"""Tiny members of three timm families (a ResNet, a ConvNeXt, a ViT), for fast tests: name -> (input side,
model.timm_kwargs, stage shapes C x H x W at that side)."""

from __future__ import annotations

TINY = {
    "timm/resnet18": (
        32,
        {"layers": [1, 1, 1, 1], "channels": [8, 16, 24, 32]},
        [(8, 8, 8), (16, 4, 4), (24, 2, 2), (32, 1, 1)],
    ),  # act1 (the stem) left out
    "timm/convnext_atto": (
        32,
        {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]},
        [(8, 8, 8), (16, 4, 4), (24, 2, 2), (32, 1, 1)],
    ),
    "timm/vit_tiny_patch16_224": (
        16,
        {"img_size": 16, "patch_size": 4, "depth": 8, "embed_dim": 32, "num_heads": 2},
        [(32, 4, 4)] * 4,
    ),  # blocks 2, 4, 6, 8 of 8
}


def flow_mapping(kwargs: dict) -> str:
    """``kwargs`` as a KEY=VALUE override's YAML flow mapping."""
    return "{" + ", ".join(f"{key}: {value}" for key, value in kwargs.items()) + "}"
