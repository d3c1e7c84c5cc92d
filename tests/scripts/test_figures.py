"""scripts/figures/: every figure under docs/ has a script that writes it, and the comparison make
figures-check makes between regenerated and committed summaries (no run here: the check itself takes
minutes)."""

import re
import shutil

import pytest

from scripts.figures import compare
from tests.conftest import REPO

SCRIPTS = "\n".join(path.read_text() for path in (REPO / "scripts" / "figures").glob("*.sh"))
ROW = "| 4 | fullgrad | 0.4174 | – | 1 | -0.1136 | 2 | 4 | 3 | 4 | 4 |"


def test_every_figure_and_summary_in_docs_is_written_by_a_figure_script():
    figures = [p for pattern in ("*.png", *compare.SUMMARIES) for p in (REPO / "docs").glob(pattern)]
    assert len(figures) >= 16
    # a script copies `<name>.png` and `<name>.summary.md` by name (figure <name>), or names the file itself
    unwritten = [p.name for p in figures if not re.search(rf"\b{re.escape(p.name.split('.')[0])}\b", SCRIPTS)]
    assert not unwritten, unwritten


def test_the_same_text_agrees():
    assert compare.compare_text(ROW, ROW) == []


@pytest.mark.parametrize(
    "regenerated",
    [
        ROW.replace("0.4174", "0.4175"),  # a value at the neighbouring printed digit: rounding
        ROW.replace("-0.1136", "-0.1135"),
    ],
)
def test_one_unit_of_the_last_printed_digit_is_rounding(regenerated):
    assert compare.compare_text(ROW, regenerated) == []


@pytest.mark.parametrize(
    ("regenerated", "found"),
    [
        (ROW.replace("0.4174", "0.4176"), "0.4174 committed, 0.4176 regenerated"),
        (ROW.replace("| 4 | fullgrad", "| 5 | fullgrad"), "4 committed, 5 regenerated"),  # ranks: exact
        (ROW.replace("–", "0.0000"), "text differs"),  # what the code writes for one seed changed
        (ROW.replace("fullgrad", "gradcam"), "text differs"),
        (ROW + "\n" + ROW, "1 lines committed, 2 regenerated"),
    ],
)
def test_a_change_beyond_rounding_is_a_difference(regenerated, found):
    (difference,) = [d for d in compare.compare_text(ROW, regenerated) if found in d]
    assert difference


def test_a_committed_number_changed_by_hand_fails_the_check(tmp_path, capsys):
    committed, regenerated = tmp_path / "docs", tmp_path / "regenerated"
    shutil.copytree(REPO / "docs", committed, ignore=shutil.ignore_patterns("results"))
    shutil.copytree(REPO / "docs", regenerated, ignore=shutil.ignore_patterns("results"))
    assert compare.main([str(committed), str(regenerated)]) == 0
    summary = committed / "perturbation_digits.summary.md"
    text = summary.read_text()
    edited = re.sub(r"\| fullgrad \| (\d\.\d{4}) ", lambda m: f"| fullgrad | {float(m[1]) + 0.01:.4f} ", text)
    assert edited != text
    summary.write_text(edited)
    assert compare.main([str(committed), str(regenerated)]) == 1
    assert "perturbation_digits.summary.md: line" in capsys.readouterr().out


def test_summaries_only_on_one_side_and_uncommitted_figures_are_differences(tmp_path):
    committed, regenerated = tmp_path / "docs", tmp_path / "regenerated"
    committed.mkdir(), regenerated.mkdir()
    (committed / "old.summary.md").write_text(ROW)
    (regenerated / "new.summary.md").write_text(ROW)
    (regenerated / "new.png").write_bytes(b"")
    assert compare.compare_directories(committed, regenerated) == [
        "old.summary.md: committed, but no figure script writes it",
        "new.summary.md: regenerated, but not committed",
        "new.png: regenerated, but not committed",
    ]
