"""collect_results.py's formats (text, markdown, csv, latex), --out, the calibration columns and --plots,
on run directories written by hand (config.yaml + metrics.json; nothing is trained)."""

from __future__ import annotations

import csv
import io
import re
import statistics

import matplotlib.image
import pytest

from engine.cli import status_of
from results import figures
from scripts import collect_results

from conftest import fake_run

CE = "configs/cifar100/resnet20_ce.yaml"
SWEEP = {(1e-4, 5e-4): 72.0, (8e-4, 5e-4): 73.0, (1e-4, 5e-3): 73.0, (8e-4, 5e-3): 71.0}  # best-epoch top-1
CE_BEST, CE_ECE, CE_NLL = (69.3, 69.5), (4.0, 5.0), (1.25, 1.35)


def calibrated(best: float, ece: float, nll: float, epochs: int = 3) -> dict:
    """metrics.json's calibration keys and a history climbing to ``best``."""
    history = [
        {"epoch": epoch, "test_acc1": best - (epochs - epoch), "test_ece": ece, "test_nll": nll}
        for epoch in range(1, epochs + 1)
    ]
    return {
        "best_ece": ece,
        "last_ece": ece + 1,
        "best_nll": nll,
        "last_nll": nll + 0.1,
        "best_aurc": 80.0,
        "last_aurc": 81.0,
        "history": history,
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """resnet20 CE over two seeds, and a resnet20 Tf-FD run from before calibration metrics (no history);
    a 2 x 2 lambda sweep of resnet32 Tf-FD; a like-for-like self-KD table on preact_resnet18."""
    root = tmp_path_factory.mktemp("formats")
    for seed, (best, ece, nll) in enumerate(zip(CE_BEST, CE_ECE, CE_NLL)):
        fake_run(
            root / "resnet20_ce" / f"seed{seed}", CE, [f"seed={seed}"], best - 0.2, best, **calibrated(best, ece, nll)
        )
    fake_run(root / "resnet20_tffd" / "seed0", "configs/cifar100/resnet20_tffd.yaml", [], 70.3, 70.5)
    for (intra, inter), best in SWEEP.items():
        fake_run(
            root / "resnet32_tffd" / f"{intra}_{inter}",
            "configs/cifar100/resnet32_tffd.yaml",
            [f"loss.tffd.lambda_intra={intra}", f"loss.tffd.lambda_inter={inter}"],
            best - 0.5,
            best,
            **calibrated(best, 3.0, 1.1),
        )
    for variant, best in (("ce", 76.0), ("mixup", 78.5), ("mixup_tffd", 78.9)):
        fake_run(
            root / f"preact_resnet18_{variant}" / "seed0",
            f"configs/cifar100/selfkd/cifar_resnet18_{variant}.yaml",
            ["model.name=preact_resnet18"],
            best - 0.4,
            best,
            **calibrated(best, 2.0, 0.9),
        )
    return root


def collect(capfd, *args: str, code: int = 0) -> tuple[str, str]:
    returned = status_of(collect_results.main, list(map(str, args)))
    out, err = capfd.readouterr()
    assert returned == code, f"exit {returned}:\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


def pipe_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown pipe table in ``text``, as its lines of cells (the separator line included)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_markdown_is_aligned_pipe_tables_with_the_same_cells_as_text(root, capfd):
    text, _ = collect(capfd, root)
    markdown, _ = collect(capfd, root, "--format", "markdown")
    assert pipe_tables(markdown) != [] and len(pipe_tables(markdown)) == len(pipe_tables(text))
    for ours, theirs in zip(pipe_tables(markdown), pipe_tables(text)):
        assert [ours[0], *ours[2:]] == [theirs[0], *theirs[2:]]  # the same cells, the separators aside
    paper = pipe_tables(markdown)[0]
    header, separator = paper[0], paper[1]
    assert header[:2] == ["model", "method"] and header[5:7] == ["last-epoch top-1", "best-epoch top-1"]
    assert separator[0].startswith(":-") and separator[5].endswith("-:")  # text left, numbers right
    line = next(cells for cells in paper if cells[:2] == ["resnet20", "Baseline"])
    assert line[6] == f"{statistics.fmean(CE_BEST):.2f} ± {statistics.stdev(CE_BEST):.2f}"
    widths = {len(line) for line in markdown.splitlines() if line.startswith("| model ")}
    assert len(widths) == 1  # padded to columns
    assert "### Self-distillation: method × {alone, + Tf-FD}" in markdown
    assert "#### preact_resnet18 on cifar100: batch 128, lr 0.1, 200 ep" in markdown


def test_csv_to_stdout_and_to_a_file_with_the_calibration_columns(root, tmp_path, capfd):
    out, _ = collect(capfd, root, "--format", "csv", "--metrics", "ece,nll")
    path = tmp_path / "table.csv"
    quiet, err = collect(capfd, root, "--format", "csv", "--metrics", "ece,nll", "--out", path)
    assert quiet == "" and path.read_bytes() == out.encode() and err.strip() == f"csv: {path}"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]  # no temporary file left
    rows = {(row["model"], row["method"], row["settings"]): row for row in csv.DictReader(io.StringIO(out))}
    ce = rows[("resnet20", "Baseline", "")]
    assert float(ce["best_mean"]) == pytest.approx(statistics.fmean(CE_BEST))
    assert float(ce["best_ece_mean"]) == pytest.approx(statistics.fmean(CE_ECE))
    assert float(ce["last_nll_mean"]) == pytest.approx(statistics.fmean(CE_NLL) + 0.1)
    assert float(ce["best_nll_std"]) == pytest.approx(statistics.stdev(CE_NLL))
    old = rows[("resnet20", "Tf-FD", "")]
    assert float(old["best_mean"]) == 70.5 and old["best_ece_mean"] == old["last_nll_mean"] == ""
    assert "best_aurc_mean" not in ce  # only what --metrics asks for
    sweep = rows[("resnet32", "Tf-FD", "loss.tffd.lambda_intra=0.0008, loss.tffd.lambda_inter=0.0005")]
    assert float(sweep["best_mean"]) == 73.0


def test_latex_is_booktabs_with_the_best_entry_of_each_column_in_bold(root, capfd):
    tex, _ = collect(capfd, root, "--format", "latex", "--metrics", "ece")
    tables = re.findall(r"\\begin\{table\}.*?\\end\{table\}", tex, re.S)
    assert len(tables) == 1 + 1 + 4  # the paper table, one self-KD table, the sweep's last/best x top-1/ECE
    for table in tables:
        assert re.search(
            r"\\begin\{tabular\}\{[lr]+\}\n\\toprule\n.*\\\\\n\\midrule\n.*\\bottomrule\n\\end\{tabular\}", table, re.S
        ), table
    paper = tables[0]
    body = paper[paper.index("\\midrule") : paper.index("\\bottomrule")]
    lines = {
        tuple(cell.strip() for cell in line.split("&")[:2]): [cell.strip() for cell in line.split("&")]
        for line in body.splitlines()[1:]
    }
    ce = lines[("resnet20", "Baseline")]
    mean, std = statistics.fmean(CE_BEST), statistics.stdev(CE_BEST)
    assert ce[6] == f"${mean:.2f} \\pm {std:.2f}$"  # not the best: 73.00 is
    # best-epoch top-1: two sweep rows tie at 73.00, both bold; the lowest best-epoch ECE is bold too
    assert body.count("$\\mathbf{73.00}$") == 2
    assert ce[12] == f"${statistics.fmean(CE_ECE):.2f} \\pm {statistics.stdev(CE_ECE):.2f}$"  # after the IJCNN column
    assert "$\\mathbf{3.00}$" in body and "loss.tffd.lambda\\_intra=0.0001" in body
    assert lines[("resnet20", "Tf-FD")][10] == "70.56 [1]"  # the config follows the IJCNN version's protocol: no dagger
    assert lines[("resnet20", "Tf-FD")][12] == "--"  # no ECE recorded: a dash
    assert "$\\Delta$ last" in paper and "best-epoch ECE (\\%)" in paper and "\\caption{cifar100 test top-1" in paper
    selfkd = tables[1]
    assert "\\caption{preact\\_resnet18 on cifar100: batch 128, lr 0.1, 200 ep. Self-KD-Lib's" in selfkd
    assert "$\\mathbf{78.90}$" in selfkd and "\\par\n[1] Self-KD-Lib README" in selfkd
    # nothing unescaped outside math
    for table in tables:
        text = re.sub(r"\$[^$]*\$", "", table)
        assert not re.search(r"(?<!\\)[_%#]|[±–Δ×†]", text), text


def test_calibration_columns_are_labelled_by_epoch_and_dashed_for_old_runs(root, capfd):
    out, _ = collect(capfd, root, "--metrics", "acc1,ece,nll")
    paper, selfkd = pipe_tables(out)[0], pipe_tables(out)[1]
    header = paper[0]
    columns = ["last-epoch ECE (%)", "best-epoch ECE (%)", "last-epoch NLL (nats)", "best-epoch NLL (nats)"]
    assert header[header.index("Δ best") + 1 : -1] == ["IJCNN version top-1 [note]", *columns] and header[-1] == "runs"
    at = header.index("best-epoch ECE (%)")
    ce = next(cells for cells in paper if cells[:2] == ["resnet20", "Baseline"])
    assert ce[at] == f"{statistics.fmean(CE_ECE):.2f} ± {statistics.stdev(CE_ECE):.2f}"
    assert ce[at + 2] == f"{statistics.fmean(CE_NLL):.3f} ± {statistics.stdev(CE_NLL):.3f}"
    old = next(cells for cells in paper if cells[:2] == ["resnet20", "Tf-FD"])
    assert old[header.index("best-epoch top-1")] == "70.50" and old[at - 1 : at + 3] == ["–"] * 4
    assert "alone: best-epoch ECE (%)" in selfkd[0] and "+ Tf-FD: last-epoch NLL (nats)" in selfkd[0]
    assert "ECE: expected calibration error, 15 equal-width confidence bins, in %" in out
    assert "#### resnet32 Tf-FD on cifar100: best-epoch ECE (%)" in out
    plain, _ = collect(capfd, root)  # (the notes on PS-KD's published numbers say how it measures ECE)
    assert not [cell for table in pipe_tables(plain) for cell in table[0] if "ECE" in cell or "NLL" in cell]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: ["--out", tmp / "absent" / "table.md"], "its directory {tmp}/absent does not exist"),
        (lambda tmp: ["--out", tmp], "--out {tmp} is a directory; name a file"),
        (
            lambda tmp: ["--format", "latex", "--out", tmp / "file" / "table.tex"],
            "--out {tmp}/file/table.tex: {tmp}/file is a file, not a directory",
        ),
        (lambda tmp: ["--csv", tmp / "absent" / "table.csv"], "--csv {tmp}/absent/table.csv: its directory"),
        (lambda tmp: ["--plots", tmp / "file"], "--plots {tmp}/file is a file, not a directory"),
        (lambda tmp: ["--metrics", "acc1,ecee"], "--metrics takes a list of acc1, ece, nll, aurc, got 'acc1,ecee'"),
    ],
)
def test_bad_output_options_exit_2_with_one_line_and_write_nothing(root, tmp_path, capfd, make, message):
    (tmp_path / "file").write_text("not a directory")
    out, err = collect(capfd, root, *make(tmp_path), code=2)
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert message.format(tmp=tmp_path) in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]


def test_every_figure_renders_as_a_png_of_its_size_and_a_pdf(root, tmp_path, capfd):
    out_dir = tmp_path / "figures"
    _, err = collect(capfd, root, "--plots", out_dir)
    sizes = {
        "curves_cifar100_resnet20": figures.CURVES_SIZE,
        "curves_cifar100_resnet32": figures.CURVES_SIZE,
        "curves_cifar100_preact_resnet18": figures.CURVES_SIZE,
        "sweep_cifar100_resnet32_Tf-FD": figures.HEATMAP_SIZE,
        "paper_bars_cifar100": figures.bars_size(1),
        "selfkd_bars_cifar100_preact_resnet18": figures.bars_size(2),
    }
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(
        f"{name}.{suffix}" for name in sizes for suffix in ("png", "pdf")
    )
    assert f"figures (png, pdf) in {out_dir}: " in err and all(name in err for name in sizes)
    assert "not in the bars (several configs, see the sweep heatmaps): resnet32 Tf-FD" in err
    for name, (width, height) in sizes.items():
        pixels = matplotlib.image.imread(out_dir / f"{name}.png")
        assert pixels.shape == (round(height * figures.DPI), round(width * figures.DPI), 4), name
        assert pixels[..., :3].std() > 0.05, f"{name}.png is blank"
        pdf = (out_dir / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF"), name


def test_figures_without_data_are_not_written(tmp_path, capfd):
    old = tmp_path / "runs" / "resnet20_ce"  # an old run: no history, no sweep; only the paper bars have data
    fake_run(old / "seed0", CE, [], 69.0, 69.4)
    _, err = collect(capfd, old, "--plots", tmp_path / "figures")
    assert sorted(path.name for path in (tmp_path / "figures").iterdir()) == [
        "paper_bars_cifar100.pdf",
        "paper_bars_cifar100.png",
    ]
    assert err.strip() == f"figures (png, pdf) in {tmp_path / 'figures'}: paper_bars_cifar100"
    synthetic = tmp_path / "runs" / "quickstart"  # no paper number, no history: nothing to draw
    fake_run(synthetic / "seed0", "configs/quickstart.yaml", [], 50.0, 51.0)
    _, err = collect(capfd, synthetic, "--plots", tmp_path / "none")
    assert not (tmp_path / "none").exists() and "none (no run has the data for any)" in err
