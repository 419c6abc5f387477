"""scripts/benchmark.py for a few steps (its JSON and table, its reference check, bad input), and the
property its GPU figures rest on: the timed training step never reads a device value on the host."""

from __future__ import annotations

import contextlib
import json
import statistics

import pytest
import torch

from engine.cli import status_of
from engine.meters import DeviceMeter
from scripts import benchmark

TINY = [
    "--batch-size",
    "8",
    "--image-size",
    "16",
    "--num-classes",
    "10",
    "--teacher",
    "resnet20",
    "--rounds",
    "2",
    "--steps",
    "1",
    "--warmup",
    "1",
    "--loader-images",
    "64",
    "--workers",
    "0",
    "--device",
    "cpu",
]


def test_benchmark_writes_every_method_and_loader(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main([*TINY, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"].startswith("cpu")
    assert set(result["methods"]) == set(benchmark.METHODS)
    for method, row in result["methods"].items():
        assert row["ms_per_step"] > 0 and len(row["samples_ms"]) == 2, method
        assert row["images_per_s"] == pytest.approx(8 / row["ms_per_step"] * 1000), method
        assert row["ratio_to_ce"] > 0 and row["cpu_ms_per_step"] > 0, method
        assert row["peak_memory_mib"] is None, "CPU peak memory is not measured"
    assert result["methods"]["ce"]["ratio_to_ce"] == 1.0
    assert result["loaders"]["device"]["images_per_s"] > 0
    assert result["loaders"]["torchvision"]["images_per_s"] > 0 and result["loaders"]["torchvision"]["workers"] == 0
    target = result["targets"]["tffd_vs_released"]
    assert target["measured"] == result["methods"]["tffd"]["ratio_to_ce"]
    assert target["max_ratio"] == result["methods"]["tffd_released"]["ratio_to_ce"]
    assert "tffd_compiled_vs_ce" not in result["targets"], "the 1.03 target is for compiled steps"
    low, high = result["methods"]["tffd"]["ratio_to_ce_ci95"]
    assert low <= result["methods"]["tffd"]["ratio_to_ce"] <= high
    check = result["reference_check"]
    assert check["agrees"] is True and check["max_relative_grad_diff"] < 1e-5
    assert [shape[1:] for shape in check["feature_shapes"]] == [[16, 16, 16], [32, 8, 8], [64, 4, 4]]
    # ResNet-20's stage features at 16 x 16, fp32, batch 8: 8 x (16*16*16 + 32*8*8 + 64*4*4) x 4 bytes
    assert result["feature_cost"]["stage_feature_mib"] == pytest.approx(8 * 7168 * 4 / 2**20)
    alone = result["tffd_term_alone"]
    assert alone["tffd"]["ms"] > 0 and alone["tffd_released"]["ms"] > 0
    assert alone["ratio_ci95"][0] <= alone["ratio"] <= alone["ratio_ci95"][1]
    printed = capsys.readouterr().out
    for row in (
        *benchmark.METHODS,
        "device",
        "torchvision",
        "target tffd_vs_released",
        "reference check",
        "bytes per forward FLOP",
        "Tf-FD term alone",
    ):
        assert row in printed


def test_the_released_row_times_the_transcription(tmp_path):
    args = benchmark.parse_args(TINY)
    experiments = benchmark.build_methods(["tffd", "tffd_released"], args, torch.device("cpu"), tmp_path)
    names = [[type(term).__name__ for term in exp.terms] for _, exp in experiments.values()]
    assert names == [["CrossEntropy", "TeacherFreeFD"], ["CrossEntropy", "ReleasedTfFD"]]


def test_reference_check_catches_a_wrong_loss(monkeypatch, tmp_path):
    args = benchmark.parse_args(TINY)
    experiments = benchmark.build_methods(["tffd"], args, torch.device("cpu"), tmp_path)
    exp = experiments["tffd"][1]
    images, *_ = next(iter(exp.loaders.train))
    assert benchmark.reference_check(exp, images)["agrees"] is True
    import losses.tffd

    wrong = losses.tffd.intra_fd
    monkeypatch.setattr(losses.tffd, "intra_fd", lambda feature, detach=False: wrong(feature, detach) * (1 + 1e-4))
    assert benchmark.reference_check(exp, images)["agrees"] is False


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "tffd,kd"], "ce included"),
        (["--methods", "ce,dkd"], "ce included"),
        (["--model", "resnet21"], "unknown model 'resnet21'"),
        (["--teacher", "resnet111"], "unknown model 'resnet111'"),
        (["--json", "/nonexistent/dir/out.json"], "its directory /nonexistent/dir does not exist"),
        (["--rounds", "0"], "--rounds must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message, capsys):
    try:
        code = status_of(benchmark.main, [*TINY, "--loader-images", "0", *args])
    except SystemExit as exit:  # argparse's own errors: its usage line, then one error line
        code = exit.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in lines[-1] and "error: " in lines[-1]
    assert all(line.startswith(("usage: ", " ")) for line in lines[:-1])


@pytest.mark.parametrize(
    "case, message",
    [
        ("a run's metrics.json", "is the run's metrics.json in {run}, which only that run writes"),
        ("a link to a run's best.pt", "(a link to {run}/best.pt) is the run's best.pt"),
        ("a directory", "is a directory; name a file"),
        ("a dangling symlink", "is a symlink to {tmp}/nowhere, which does not exist"),
    ],
)
def test_json_never_replaces_a_runs_file_nor_goes_where_a_file_cannot(case, message, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "metrics.json", "best.pt"):
        (run / name).write_text(f"the run's {name}")
    path = {
        "a run's metrics.json": run / "metrics.json",
        "a link to a run's best.pt": tmp_path / "out.json",
        "a directory": run,
        "a dangling symlink": tmp_path / "out.json",
    }[case]
    if case.startswith("a link"):
        path.symlink_to(run / "best.pt")
    elif case == "a dangling symlink":
        path.symlink_to(tmp_path / "nowhere")
    assert status_of(benchmark.main, [*TINY, "--loader-images", "0", "--json", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --json {path}") and message.format(run=run, tmp=tmp_path) in err, err
    assert err.count("\n") == 1
    assert all((run / name).read_text() == f"the run's {name}" for name in ("config.yaml", "metrics.json", "best.pt"))


@contextlib.contextmanager
def no_host_reads():
    """Make every Python-level read of a tensor's value raise: on a GPU each one waits for the queue."""

    def refuse(name):
        def read(*_args, **_kwargs):
            raise AssertionError(f"Tensor.{name} in the training step: a host sync per step on a GPU")

        return read

    names = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__")
    originals = {name: getattr(torch.Tensor, name) for name in names}
    try:
        for name in names:
            setattr(torch.Tensor, name, refuse(name))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_training_step_never_reads_device_values(amp, tmp_path):
    args = benchmark.parse_args([*TINY, "--amp", amp])
    experiments = benchmark.build_methods(["ce", "kd_tffd"], args, torch.device("cpu"), tmp_path)  # every term
    for method, (_, exp) in experiments.items():
        meter = DeviceMeter(torch.device("cpu"))
        exp.loaders.train.set_epoch(1)
        with no_host_reads():  # what the trainer does per step: the loader, the step, the meter
            for step, (images, targets, _) in enumerate(exp.loaders.train, 1):
                logits, losses, total, targets = benchmark.compute_losses(exp, images, targets, epoch=30)
                benchmark.apply_gradients(exp, total)
                meter.update({"loss": total, **losses}, logits, targets, step)
        sums = meter.flush()  # the one read, once per logging interval
        assert sums["count"] == 4 * 8 and sums["first_bad_step"] == -1, method
        assert all(torch.isfinite(p).all() for p in exp.model.parameters()), method


def test_compiled_steps_are_timed_beside_their_eager_twins(tmp_path, capsys, monkeypatch):
    """--compile also times each method's eager step in the same rounds and prints compiled / eager (on the
    CPU with the aot_eager backend, as tests/test_compile.py)."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    out = tmp_path / "bench.json"
    args = [*TINY, "--compile", "--methods", "ce,tffd", "--loader-images", "0", "--json", str(out)]
    assert benchmark.main(args) == 0
    methods = json.loads(out.read_text())["methods"]
    assert set(methods) == {"ce", "tffd"}
    for method, row in methods.items():
        ratios = [mine / eager for mine, eager in zip(row["samples_ms"], row["eager_samples_ms"])]
        assert len(ratios) == 2 and row["compiled_to_eager"] == pytest.approx(statistics.median(ratios)), method
        assert row["eager_ms_per_step"] > 0
    printed = capsys.readouterr().out
    assert "compiled/eager" in printed.splitlines()[1]
    assert f"{methods['tffd']['compiled_to_eager']:16.3f}" in printed


def test_a_compared_model_is_timed_in_the_same_rounds_and_set_reaches_the_main_models_config(tmp_path, capsys):
    pytest.importorskip("timm")
    out = tmp_path / "bench.json"
    args = [
        *TINY,
        "--loader-images",
        "0",
        "--methods",
        "ce,tffd",
        "--model",
        "timm/vit_tiny_patch16_224",
        "--set",
        "model.timm_kwargs={img_size: 16, patch_size: 4, depth: 4, embed_dim: 32, num_heads: 2}",
        "--compare-model",
        "resnet20",
        "--json",
        str(out),
    ]
    assert benchmark.main(args) == 0
    result = json.loads(out.read_text())
    assert set(result["methods"]) == {"ce", "tffd", "ce@resnet20", "tffd@resnet20"}
    assert result["methods"]["ce@resnet20"]["ratio_to_ce"] == 1.0  # against its own ce
    assert all(result["methods"][f"{m}@resnet20"]["model_ratio"] > 0 for m in ("ce", "tffd"))
    assert result["reference_check"]["feature_shapes"][0] == [8, 32, 4, 4]  # the ViT's blocks, not resnet20's
    assert "timm/vit_tiny_patch16_224 step / resnet20 step, median of per-round ratios: ce " in capsys.readouterr().out
