"""What only a GPU shows; ``scripts/gpu_check.sh`` runs these, and they are skipped where no CUDA GPU
is visible. The same code paths are covered on the CPU by test_tffd.py (the loss values, the term
traced by torch.compile without graph breaks), test_benchmark.py (bf16/fp16 steps that never read
a device value on the host) and test_compile.py (the whole compiled step)."""

from __future__ import annotations

import pytest
import torch

from engine.builder import build_experiment
from engine.config import load_config
from engine.distributed import DistContext
from engine.step import compute_losses
from losses import StepOutput
from losses.tffd import TeacherFreeFD, TfFDConfig

from conftest import SMOKE, read_metrics, run_train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda", 0)


def feats_on(device, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    shapes = [(32, 16, 32, 32), (32, 32, 16, 16), (32, 64, 8, 8)]
    return [torch.randn(s, generator=generator).relu().to(device, dtype).requires_grad_(True) for s in shapes]


def tffd_values_and_grads(feats, autocast_dtype=None):
    term = TeacherFreeFD(TfFDConfig(lambda_intra=1.0, lambda_inter=1.0, warmup_epochs=0))
    step = StepOutput(torch.zeros(32, 10), feats, torch.zeros(32, dtype=torch.long), 1)
    with torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = term(step)
    grads = torch.autograd.grad(out["tffd_intra"] + out["tffd_inter"], feats)
    return [out["tffd_intra"].float().cpu(), out["tffd_inter"].float().cpu()], [g.float().cpu() for g in grads]


def test_tffd_on_cuda_equals_cpu_in_fp32():
    cpu_values, cpu_grads = tffd_values_and_grads(feats_on("cpu"))
    cuda_values, cuda_grads = tffd_values_and_grads(feats_on(CUDA))
    for mine, theirs in zip(cuda_values + cuda_grads, cpu_values + cpu_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-9)


def test_tffd_on_bf16_features_is_close_to_fp32():
    values, _ = tffd_values_and_grads(feats_on(CUDA, torch.bfloat16), torch.bfloat16)
    reference, _ = tffd_values_and_grads(feats_on(CUDA))
    for mine, theirs in zip(values, reference):
        assert mine.dtype == torch.float32 and torch.isfinite(mine)
        torch.testing.assert_close(mine, theirs, rtol=3e-2, atol=0)


def cuda_experiment(*overrides):
    config = load_config("configs/quickstart.yaml", [*SMOKE, "train.device=cuda", *overrides])
    return build_experiment(config, DistContext(rank=0, world_size=1, local_rank=0, device=CUDA))


def test_compiled_bf16_channels_last_step_matches_eager():
    options = ["train.amp=bf16", "train.channels_last=true"]
    eager, compiled = cuda_experiment(*options), cuda_experiment(*options, "train.compile=true")
    eager.loaders.train.set_epoch(1)
    images, targets, _ = next(iter(eager.loaders.train))
    expected = compute_losses(eager, images, targets, epoch=1)
    got = compute_losses(compiled, images, targets, epoch=1)
    assert set(got.terms) == set(expected.terms) == {"ce", "tffd_inter", "tffd_intra"}
    for name, value in expected.terms.items():
        torch.testing.assert_close(got.terms[name].float(), value.float(), rtol=5e-2, atol=1e-6)


def test_a_short_compiled_bf16_run_on_cuda(tmp_path):
    run_dir = tmp_path / "run"
    run_train(
        *SMOKE,
        "train.device=cuda",
        "train.amp=bf16",
        "train.channels_last=true",
        "train.compile=true",
        "--run-dir",
        str(run_dir),
        check=True,
    )
    metrics = read_metrics(run_dir)
    assert metrics["finished"] and metrics["best_acc1"] > 100 / 10
