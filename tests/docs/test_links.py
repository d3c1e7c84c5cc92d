"""The README and docs/ pages: every relative link leads to a file that exists, and every #anchor to a
heading of the page it names."""

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]  # docs/results/ too
# [text](target) and ![alt](target); a target ends at the first space or closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())  # a code block's brackets are code, not links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # no http:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, broken


TOPICS = ("configuration", "methods", "fullgrad", "evaluation", "datasets-and-models", "sweeps-slurm",
          "cache",
          "gpu", "benchmarks", "development")  # fmt: skip


def test_the_readme_links_every_topic_page_and_the_checker_sees_its_links():
    # Were the pattern to find nothing, every page would pass; the README's links prove it finds them.
    links = relative_links(REPO / "README.md")
    assert "docs/roar_digits_mean.png" in links
    assert {f"docs/{topic}.md" for topic in TOPICS} <= set(links)
    assert "reading-the-curve" in anchors(REPO / "README.md")
    assert len((REPO / "README.md").read_text().splitlines()) <= 150
