"""docs/REFERENCE.md is what scripts/make_reference.py makes of the code today: the registries' parts and every
config option, so no table in the docs can drift from the code."""

from __future__ import annotations

from scripts import make_reference


def test_the_generated_reference_is_up_to_date():
    assert make_reference.REFERENCE.read_text() == make_reference.render(), (
        "docs/REFERENCE.md is stale: run python scripts/make_reference.py"
    )


def test_the_reference_lists_every_term_plan_and_option():
    from core.typed_config import all_keys
    from data.plans import PLANS
    from engine.config import ExperimentConfig
    from losses import LOSSES

    text = make_reference.render()
    assert all(f"| `{name}` |" in text for name in [*LOSSES, *PLANS])
    keys = all_keys(ExperimentConfig)
    leaves = [key for key in keys if not any(other.startswith(key + ".") for other in keys)]  # not the sections
    assert all(f"| `{key}` |" in text for key in leaves)


def test_check_says_whether_the_file_is_stale(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(make_reference, "REFERENCE", tmp_path / "REFERENCE.md")
    assert make_reference.main(["--check"]) == 1 and "stale" in capsys.readouterr().out
    assert make_reference.main([]) == 0 and make_reference.main(["--check"]) == 0
    assert (tmp_path / "REFERENCE.md").read_text() == make_reference.render()
