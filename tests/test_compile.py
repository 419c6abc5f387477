"""``train.compile=true`` compiles the whole step (model and every loss term) and computes what the
eager step computes. On the CPU the test compiles with the ``aot_eager`` backend: the same graph
capture and autograd tracing as the default backend, without its minutes of C++ code generation on
2 cores (tests/test_cuda.py runs the default backend on a GPU)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from engine.builder import build_experiment
from engine.config import load_config
from engine.distributed import DistContext
from engine.session import run_experiment
from engine.step import apply_gradients, compute_losses

from conftest import REPO, SMOKE, read_metrics

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def experiment(*overrides):
    return build_experiment(load_config("configs/quickstart.yaml", [*SMOKE, "train.device=cpu", *overrides]), CPU)


def test_compiled_step_equals_eager_and_compiles_every_term(monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    eager, compiled = experiment(), experiment("train.compile=true")
    # One graph: the TrainingNetwork (the model and every loss term) is compiled as a whole.
    assert hasattr(compiled.network, "_orig_mod") and not hasattr(eager.network, "_orig_mod")
    assert compiled.network._orig_mod.model is compiled.model
    assert list(compiled.network._orig_mod.terms) == compiled.terms
    eager.loaders.train.set_epoch(1)
    batches = list(eager.loaders.train)[:2]
    with torch._dynamo.config.patch(error_on_recompile=False):
        for epoch, (images, targets, _) in enumerate(batches, 1):  # two epochs: the warm-up weight changes
            expected, got = (compute_losses(exp, images, targets, epoch) for exp in (eager, compiled))
            assert set(got.terms) == set(expected.terms) == {"ce", "tffd_inter", "tffd_intra"}
            for name, value in expected.terms.items():
                torch.testing.assert_close(got.terms[name], value, rtol=1e-5, atol=1e-7)
            apply_gradients(eager, expected.total)
            apply_gradients(compiled, got.total)
    for mine, theirs in zip(compiled.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "terms, compilations",
    [
        ("[ce]", 1),
        ("[ce,tffd]", 1),
        ("[ps_kd]", 1),
        ("[ce,dlb]", 2),  # DLB's first step has no previous batch yet: one part and no teacher
    ],
)
def test_a_compiled_run_compiles_its_step_once_over_epochs_warmup_and_a_partial_batch(
    terms, compilations, tmp_path, monkeypatch
):
    """Three epochs of 80 images in batches of 32 (the third one partial) with a Tf-FD warm-up over two:
    the step is compiled once (DLB: once more for its first step), never per epoch, warm-up weight or
    batch size, and without a graph break inside it. Counted by torch's own counters."""
    counter = CompileCounterWithBackend("aot_eager")
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counter))
    torch._dynamo.reset()
    counters.clear()
    options = [
        *SMOKE,
        "train.device=cpu",
        "train.compile=true",
        f"loss.terms={terms}",
        "train.epochs=3",
        "data.num_train=80",
        "train.batch_size=32",
        "data.num_test=64",
        "loss.tffd.warmup_epochs=2",
    ]
    assert run_experiment(str(REPO / "configs/quickstart.yaml"), options, str(tmp_path / "run"), False) == 0
    assert read_metrics(tmp_path / "run")["finished"]
    assert counter.frame_count == compilations
    assert not counters["graph_break"], dict(counters["graph_break"])
