"""Every benchmark figure the README and docs/ quote is a row of benchmarks/results.jsonl, the file make bench
writes (benchmarks/results.py says how a page quotes a row); a module with no rows there is quoted as not
measured."""

import pytest

from benchmarks import results
from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_quoted_bench_figure_is_in_the_results_file(page):
    recorded = results.load()
    problems = [
        problem
        for module, selector, figure in results.quotes(page.read_text())
        if (problem := results.check_quote(figure, module, selector, recorded)) is not None
    ]
    assert not problems, problems


def test_the_pages_quote_the_bench_rows_they_show():
    # Were the pattern to find nothing, every page would pass; the bench tables of the CIFAR-10 and GPU
    # pages prove it finds them.
    modules = {module for page in PAGES for module, _, _ in results.quotes(page.read_text())}
    assert {"cifar", "training", "gpu"} <= modules
