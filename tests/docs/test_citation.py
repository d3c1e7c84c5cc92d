"""CITATION.cff and LICENSE: the citation file has the keys CFF 1.2.0 requires and those GitHub's "Cite this
repository" reads, names roar's version and licence as the package does, and cites the three papers roar
implements (FullGrad, ROAR, ROAD)."""

import datetime
import re

import yaml

import roar
from tests.conftest import REPO

CITATION = yaml.safe_load((REPO / "CITATION.cff").read_text())
PYPROJECT = (REPO / "pyproject.toml").read_text()  # tomllib is Python 3.11+, roar runs on 3.10


def project_value(key: str) -> str:
    return re.search(rf'^{key} = "([^"]+)"', PYPROJECT, re.MULTILINE).group(1)


def test_the_citation_file_has_the_keys_cff_requires():
    assert CITATION["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):  # required by CFF 1.2.0
        assert CITATION[key], key
    assert CITATION["authors"] == [{"name": "roar developers"}]  # an entity: name, not family-names
    # A date as CFF's schema has it, a string YYYY-MM-DD (unquoted, YAML would read a date object).
    released = CITATION["date-released"]
    assert isinstance(released, str) and datetime.date.fromisoformat(released)


def test_the_citation_names_the_package_version_and_licence():
    assert CITATION["version"] == project_value("version") == roar.__version__
    assert CITATION["license"] == "MIT"
    assert project_value("license") == "MIT"
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def reference(title_words: str) -> dict:
    found = [r for r in CITATION["references"] if re.search(title_words, r["title"], re.IGNORECASE)]
    assert len(found) == 1, f"one reference titled like {title_words!r}, found {len(found)}"
    return found[0]


def family_names(ref: dict) -> list[str]:
    return [author["family-names"] for author in ref["authors"]]


def test_the_citation_cites_fullgrad_roar_and_road():
    fullgrad = reference(r"^Full-Gradient Representation for Neural Network Visualization$")
    assert family_names(fullgrad) == ["Srinivas", "Fleuret"]
    assert fullgrad["year"] == 2019 and "NeurIPS" in fullgrad["collection-title"]

    roar_paper = reference(r"^A Benchmark for Interpretability Methods in Deep Neural Networks$")
    assert family_names(roar_paper) == ["Hooker", "Erhan", "Kindermans", "Kim"]
    assert roar_paper["year"] == 2019 and "NeurIPS" in roar_paper["collection-title"]

    road = reference(r"^A Consistent and Efficient Evaluation Strategy for Attribution Methods$")
    assert family_names(road) == ["Rong", "Leemann", "Borisov", "Kasneci", "Kasneci"]
    assert road["year"] == 2022 and "ICML" in road["collection-title"]

    for ref in CITATION["references"]:  # every reference has what CFF requires of one
        assert ref["type"] and ref["title"] and ref["authors"]
