"""What the help and the documentation say against what exists: `roar --help` names every preset, task and
fill; docs/configuration.md's tables name every option of roar/conf/ and nothing else; the YAML comments
that list the fills list all of them; the paths the pages name exist; the README shows its two commands
first. Everything expected is read from roar/conf/ and roar.removal.FILLS, never written out here, so an
option added without its documentation row fails this file, and so does a row left behind by a removed one."""

import re

import pytest
import yaml

from roar.removal import FILLS
from tests.conftest import REPO, run_command, succeeded

CONF = REPO / "roar" / "conf"
CONFIGURATION = REPO / "docs" / "configuration.md"
# hydra/ holds Hydra's own settings (run directories, the help, the SLURM launcher), not roar's options.
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__"))
# Groups whose keys have no table: a method's parameters sit under its own name (docs/methods.md lists
# them), and a preset sets keys of the other groups.
NO_KEY_TABLE = ("method", "experiment")
# Mappings whose keys are options in their own right: the objects roar builds from a dataset and a model.
NESTED = {"dataset": ("datamodule",), "model": ("net",)}
# How a node is built, not what it is.
PLUMBING = ("_target_", "_partial_", "defaults")
# Lists of values that are not files: the fills (roar.fill and task.fill take the same ones).
VALUES = {"roar.fill": FILLS}


def options(group: str) -> set[str]:
    return {path.stem for path in (CONF / group).glob("*.yaml")}


def keys(group: str) -> set[str]:
    """`group.key` for every key an option file of `group` sets, and `group.node.key` for the NESTED nodes."""
    found = set()
    for path in (CONF / group).glob("*.yaml"):
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            if key in PLUMBING:
                continue
            found.add(f"{group}.{key}")
            if key in NESTED.get(group, ()) and isinstance(value, dict):
                found |= {f"{group}.{key}.{inner}" for inner in value if inner not in PLUMBING}
    return found


def expected_tables() -> dict[str, set[str]]:
    """The first header cell of every table docs/configuration.md must have, and the rows it must have."""
    tables = {f"{group}=": options(group) for group in GROUPS}
    tables |= {f"{group}.*": keys(group) for group in GROUPS if group not in NO_KEY_TABLE and keys(group)}
    tables |= {f"{name}=": set(values) for name, values in VALUES.items()}
    top = yaml.safe_load((CONF / "config.yaml").read_text())
    tables["config.yaml"] = {key for key in top if key not in PLUMBING}
    return tables


FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`([^`]+)`")
SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


def first_cell(line: str) -> str:
    return re.split(r"(?<!\\)\|", line)[1].strip()  # `\|` inside a cell is an escaped bar


def tables(text: str) -> dict[str, list[str]]:
    """Every Markdown table whose first header cell is one code span: that span -> the code spans in the
    first cell of each of its rows (a row may name several options that share a description)."""
    found = {}
    lines = FENCE.sub("", text).splitlines()
    for i, line in enumerate(lines[:-1]):
        header = re.fullmatch(r"`([^`]+)`", first_cell(line)) if line.startswith("|") else None
        if not header or not SEPARATOR.match(lines[i + 1]) or (i and lines[i - 1].startswith("|")):
            continue
        rows = []
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            rows += CODE.findall(first_cell(row))
        assert header.group(1) not in found, f"two tables headed `{header.group(1)}`"
        found[header.group(1)] = rows
    return found


def drift(text: str) -> list[str]:
    """What the tables of `text` (docs/configuration.md) and roar/conf/ disagree on, one line each."""
    documented = tables(text)
    expected = expected_tables()
    problems = []
    for header, names in expected.items():
        if header not in documented:
            problems.append(f"no table headed `{header}` (its rows would be {', '.join(sorted(names))})")
            continue
        rows = documented[header]
        twice = {row for row in rows if rows.count(row) > 1}
        problems += [f"`{header}` table: no row for `{name}`" for name in sorted(names - set(rows))]
        problems += [
            f"`{header}` table: `{name}` is not an option of roar/conf/" for name in sorted(set(rows) - names)
        ]
        problems += [f"`{header}` table: `{name}` has two rows" for name in sorted(twice)]
    # A table for a group (or key list) that does not exist, e.g. left behind by a removed group.
    problems += [
        f"a table headed `{header}`, but roar/conf/ has no such group"
        for header in documented
        if re.fullmatch(r"[a-z_]+(=|\.\*)", header) and header not in expected
    ]
    return problems


def test_the_configuration_tables_name_every_option_and_only_those():
    assert drift(CONFIGURATION.read_text()) == []


def test_the_checker_reads_every_table_and_reports_what_is_missing_or_unknown():
    text = CONFIGURATION.read_text()
    # Were the reader to find no table, every page would pass: it finds one per expected header.
    assert set(tables(text)) >= set(expected_tables())
    # A doctored copy: a preset's row gone, a key's row gone, a fill that does not exist added.
    doctored = re.sub(r"^\| `cifar10_cpu` \|.*\n", "", text, flags=re.MULTILINE)
    doctored = re.sub(r"^\| `roar\.proceed_at_chance` \|.*\n", "", doctored, flags=re.MULTILINE)
    doctored = doctored.replace("| `road` |", "| `road` | ROAD |\n| `smudge` |", 1)
    assert doctored != text
    problems = drift(doctored)
    assert "`experiment=` table: no row for `cifar10_cpu`" in problems
    assert "`roar.*` table: no row for `roar.proceed_at_chance`" in problems
    assert "`roar.fill=` table: `smudge` is not an option of roar/conf/" in problems
    # A whole group's table gone is reported as such.
    without_paths = re.sub(r"^\| `paths=` \|.*?\n\n", "", text, flags=re.MULTILINE | re.DOTALL)
    assert any(p.startswith("no table headed `paths=`") for p in drift(without_paths))


def test_the_checker_sees_a_new_key_of_a_dataset():
    # What another option (e.g. dataset.storage) would do: its key appears in expected_tables(), so a
    # documentation without its row is reported.
    assert "dataset.datamodule.batch_size" in keys("dataset")
    assert "model.net.widths" in keys("model")
    assert "task.order" in keys("task") and "task._target_" not in keys("task")


def overrides_section(help_text: str) -> str:
    """The help's own lists (the groups' section after it is Hydra's, listing every file anyway)."""
    return help_text.split("== Overrides used first ==")[1].split("== Configuration groups")[0]


def test_the_help_names_every_preset_task_and_fill(tmp_path):
    done = succeeded(run_command("roar", "--help", cwd=tmp_path))
    section = overrides_section(done.stdout)
    words = set(re.findall(r"[\w]+", section))
    for group in ("experiment", "task"):
        assert options(group) <= words, f"roar --help names no {sorted(options(group) - words)} ({group})"
    assert set(FILLS) <= words, f"roar --help names no fill {sorted(set(FILLS) - words)}"
    # The footer says where the documentation is: the source repository, not beside roar/conf/.
    assert "source repository" in done.stdout and "docs/configuration.md" in done.stdout


def comment_before(text: str, key: str) -> str:
    """The comment lines directly above the top-level `key:` line of a YAML file."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
    comment = []
    for line in reversed(lines[:at]):
        if not line.startswith("#"):
            break
        comment.insert(0, line)
    return "\n".join(comment)


def fills_missing(comment: str) -> list[str]:
    return [fill for fill in FILLS if not re.search(rf"\b{fill}\b", comment)]


@pytest.mark.parametrize("path", ["roar/default.yaml", "task/perturbation.yaml"])
def test_the_fill_comments_name_every_fill(path):
    comment = comment_before((CONF / path).read_text(), "fill")
    assert comment, f"roar/conf/{path} has no comment above fill:"
    assert fills_missing(comment) == [], f"roar/conf/{path}: the fill: comment omits {fills_missing(comment)}"
    assert fills_missing(comment.replace("blur", "")) == ["blur"]  # the check can fail


PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP_FOLDERS = "roar|tests|benchmarks|examples|docs|slurm|hydra_plugins"
REPO_PATH = re.compile(rf"(?<![\w./-])((?:{TOP_FOLDERS})/[\w/.-]*\w)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_path_a_page_names_exists(page):
    # Module paths move (roar/stages/, roar/runtime/, roar/report/): a page naming the old place fails.
    named = REPO_PATH.findall(page.read_text())
    missing = [p for p in named if not (REPO / p).exists() and not (page.parent / p).exists()]
    assert missing == []


def test_the_readme_shows_the_two_commands_first():
    top = (REPO / "README.md").read_text().splitlines()[:40]
    assert any("make demo" in line for line in top), "make demo is not within the README's first 40 lines"
    assert any("make test" in line for line in top), "make test is not within the README's first 40 lines"
