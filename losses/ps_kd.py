"""PS-KD, progressive self-knowledge distillation (Kim et al., ICCV 2021).

The network's own prediction on each training image in the previous epoch teaches it in this one:

    target_i = (1 - alpha_t) * onehot(y_i) + alpha_t * P[i],   alpha_t = alpha_T * epoch / epochs
    L_ps = mean over the batch of sum_c -target_ic * log softmax(z_i)_c

P[i] is softmax(z_i) (T = 1, detached) from the training forward pass of image i in the previous
epoch (augmented, train mode, the weights before that step's update), as in the authors' code
(lgcnsai/PS-KD-Pytorch ``main.py``, ``loss/pskd_loss.py``); in the first epoch P[i] is the one-hot
label, so the target is the label. alpha_T = 0.8. The term is the whole loss (no separate ``ce``):
``configs/_base_/methods/ps_kd.yaml`` lists it alone. Their protocol is 300 epochs, /10 at 150 and
225; Self-KD-Lib's ``ps_kd.py`` runs the same loss under its 200-epoch one (``configs/cifar100/selfkd``).

P is an N x K table of the term (50,000 x 100 floats, 20 MB, for CIFAR-100; 1.28M x 1000, 5.1 GB in
float32, for ImageNet), saved in every checkpoint under the term's ``past`` (with ``seen``, the rows
written at least once). Under DDP every rank updates the rows of the samples it trains on and the rows
are all-gathered each step, so every rank holds all of P, as the authors' DDP code does. Two options fit
the ImageNet table (``configs/imagenet/resnet18_ps_kd.yaml`` sets cpu + float16):

- ``storage``: ``device`` keeps P a buffer with the model (the default). ``cpu`` keeps it in host memory,
  as the authors do: it is then no buffer, so moving the term to the device and the buffer broadcasts
  (DDP's and the trainer's before each evaluation) leave it where it is. Each step copies the indices
  to the host (a device sync), gathers the batch's rows into pinned memory (when training on a GPU),
  copies them to the device, and after the all-gather copies every rank's new rows back into the table.
  The table itself is not pinned: only these small row copies cross the bus, and PyTorch's pinned
  allocator rounds a block up to a power of two (8 GiB for the float32 ImageNet table).
  Under torch.compile these host copies run outside the graph.
- ``dtype``: the table's element type. The target is computed in float32 from the stored rows.
  float16 keeps 11 significant bits: a probability is off by at most 2^-11 of itself (4.9e-4), one
  below 6e-5 by at most 3e-8 (float16's subnormal spacing, 6e-8), so a stored row sums to 1 within
  about 5e-4 (it is not renormalised); bfloat16 keeps 8 bits (3.9e-3 of the value). float16 is the
  closer of the two for numbers in [0, 1] and halves the table (2.6 GB for ImageNet).

A checkpoint's ``past`` loads into either storage and any dtype (converted on load).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from core.typed_config import Options, option

from .base import LossTerm, StepOutput, TrainingSetup
from .registry import register_loss


def ps_kd_loss(
    logits: torch.Tensor, one_hot: torch.Tensor, past: torch.Tensor, alpha: float | torch.Tensor
) -> torch.Tensor:
    """Cross-entropy against (1 - alpha) * onehot + alpha * the past predictions, batch mean."""
    return F.cross_entropy(logits.float(), (1 - alpha) * one_hot + alpha * past)


def gather_from_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (the same shape on each), concatenated; ``tensor`` itself without DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class PSKDConfig(Options):
    alpha_T: float = option(
        0.8,
        "the weight of the past predictions in the last epoch (it grows linearly from alpha_T / epochs)",
        min=0,
        max=1,
    )
    storage: str = option(
        "device",
        "where the N x K table of past predictions lives: device (a buffer with the "
        "model) or cpu (host memory; each step copies its rows to the device and "
        "back: for ImageNet-sized tables)",
        choices=("device", "cpu"),
    )
    dtype: str = option(
        "float32",
        "the table's element type (float16: within 2^-11 of each probability, half "
        "the memory); the target is computed in float32",
        choices=tuple(DTYPES),
    )


@register_loss("ps_kd", PSKDConfig)
class ProgressiveSelfKD(LossTerm):
    def __init__(self, config: PSKDConfig):
        super().__init__()
        self.config = config
        self.epochs = 1
        self.on_host = config.storage == "cpu"
        table = torch.zeros(0, 0, dtype=DTYPES[config.dtype])  # N x K, made by attach()
        if self.on_host:
            self.past = table  # a plain attribute, which .to(device) and buffer broadcasts leave in host memory
        else:
            self.register_buffer("past", table)
        self.register_buffer("seen", torch.zeros(0, dtype=torch.bool))  # rows written at least once

    def attach(self, setup: TrainingSetup) -> None:
        self.epochs = setup.epochs
        self.past = torch.zeros(setup.num_samples, setup.num_classes, dtype=self.past.dtype)
        self.seen = torch.zeros(setup.num_samples, dtype=torch.bool)

    def forward(self, step: StepOutput):
        if step.indices is None:
            raise RuntimeError("the ps_kd term needs the training samples' indices (StepOutput.indices)")
        indices = step.indices
        one_hot = F.one_hot(step.targets, self.past.shape[1]).float()
        past = torch.where(self.seen[indices, None], self._read(indices), one_hot)  # epoch 1: the label
        labels = one_hot if step.target_probs is None else step.target_probs.float()  # mixed, if mixed
        loss = ps_kd_loss(step.logits, labels, past, self.config.alpha_T * step.epoch / self.epochs)
        with torch.no_grad():  # what the next epoch reads: this pass's predictions, from every rank
            written = gather_from_ranks(indices)
            self._write(written, gather_from_ranks(step.logits.detach().float().softmax(dim=1)))
            self.seen[written] = True
        return {"ps_kd": loss}

    def _read(self, indices: torch.Tensor) -> torch.Tensor:
        """The table's rows at ``indices``, as float32 on the indices' device."""
        return (self._read_host(indices) if self.on_host else self.past[indices]).float()

    def _write(self, indices: torch.Tensor, probs: torch.Tensor) -> None:
        if self.on_host:
            self._write_host(indices, probs)
        else:
            self.past[indices] = probs.to(self.past.dtype)

    @torch.compiler.disable
    def _read_host(self, indices: torch.Tensor) -> torch.Tensor:
        rows = torch.empty(indices.shape[0], self.past.shape[1], dtype=self.past.dtype, pin_memory=indices.is_cuda)
        torch.index_select(self.past, 0, indices.cpu(), out=rows)
        return rows.to(indices.device, non_blocking=True)

    @torch.compiler.disable
    def _write_host(self, indices: torch.Tensor, probs: torch.Tensor) -> None:
        self.past[indices.cpu()] = probs.to(self.past.dtype).cpu()

    # In host storage ``past`` is no buffer: the checkpoint still holds it under the same key.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.on_host:
            destination[prefix + "past"] = self.past

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + "past"
        if self.on_host:
            if key not in state_dict:
                missing_keys.append(key)
            elif state_dict[key].shape != self.past.shape:
                error_msgs.append(
                    f"size mismatch for {key}: copying a param with shape {tuple(state_dict[key].shape)} "
                    f"from checkpoint, the shape in current model is {tuple(self.past.shape)}."
                )
            else:
                self.past.copy_(state_dict[key])
            state_dict = {name: value for name, value in state_dict.items() if name != key}
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
