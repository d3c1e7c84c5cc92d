"""benchmarks/results.py: the records make bench writes, and the check of the figures the docs quote from
them (no benchmark runs here)."""

import json

from benchmarks import results
from benchmarks.__main__ import BENCHMARKS

WHERE = {"commit": "0123456789ab", "dirty": False, "date": "2026-12-05T10:00:00Z", "cpu": "AMD EPYC",
         "cores": 2, "threads": 2, "load_average": [0.1, 0.2, 0.3]}  # fmt: skip
TRAINING = ("cpu (2 threads) small_cnn, 3x32x32, batch 256: lightning 3947 img/s, plain loop 3968 img/s, "
            "Lightning/plain time ratio 1.005 (overhead +0.5%, ok)")  # fmt: skip


def test_a_record_per_measured_row_with_where_and_when_it_was_measured():
    rows = [TRAINING, "gpu data path: skipped: no CUDA device"]
    (record,) = results.records("training", rows, WHERE)
    assert record == {"module": "training", "row": TRAINING, **WHERE}
    assert set(record) == set(results.FIELDS)


def test_the_context_names_the_commit_machine_load_and_date():
    where = results.context(threads=3)
    assert set(where) | {"module", "row"} >= set(results.FIELDS)
    assert len(where["commit"]) == 12 and int(where["commit"], 16) >= 0 and isinstance(where["dirty"], bool)
    assert where["cpu"] and where["cores"] >= 1 and where["threads"] == 3
    assert len(where["load_average"]) == 3 and where["date"].endswith("Z")


def test_running_a_module_replaces_its_records_in_place_and_keeps_the_others(tmp_path):
    path = tmp_path / "results.jsonl"
    results.replace_module("road", results.records("road", ["road 1", "road 2"], WHERE), path)
    results.replace_module("training", results.records("training", ["training 1"], WHERE), path)
    results.replace_module("gpu", results.records("gpu", ["gpu 1"], WHERE), path)
    results.replace_module("training", results.records("training", ["training 2", "training 3"], WHERE), path)
    assert [r["row"] for r in results.load(path)] == ["road 1", "road 2", "training 2", "training 3", "gpu 1"]
    results.replace_module("road", [], path)  # a module whose rows were all skipped keeps none
    rows = [json.loads(line)["row"] for line in path.read_text().splitlines()]
    assert rows == ["training 2", "training 3", "gpu 1"]


def test_a_quote_must_match_one_row_and_every_number_it_shows():
    recorded = results.records("training", [TRAINING], WHERE)
    assert results.check_quote("1.005", "training", "small_cnn, 3x32x32, batch 256", recorded) is None
    bold = "**1.005** (3947 against 3968 img/s)"
    assert results.check_quote(bold, "training", "batch 256", recorded) is None
    assert "1.030 not in" in results.check_quote("1.030", "training", "batch 256", recorded)
    assert "0 rows of training" in results.check_quote("1.005", "training", "batch 128", recorded)
    assert "no figure quoted" in results.check_quote("not measured", "training", "batch 256", recorded)
    two = results.records("training", [TRAINING, TRAINING.replace("3947", "3948")], WHERE)
    assert "2 rows of training" in results.check_quote("1.005", "training", "batch 256", two)


def test_a_module_without_rows_is_quoted_as_not_measured():
    assert results.check_quote("not measured (no GPU)", "gpu", "to 93%", []) is None
    assert "no row in results.jsonl" in results.check_quote("9.8 s", "gpu", "to 93%", [])


def test_thousands_separators_in_the_docs_match_the_printed_numbers():
    recorded = results.records("datapath", ["cpu (2 threads): masked batches: 32800 img/s"], WHERE)
    assert results.check_quote("32 800 img/s", "datapath", "masked", recorded) is None
    assert results.check_quote("32,800", "datapath", "masked", recorded) is None


def test_the_committed_file_holds_only_measured_rows_of_known_modules():
    for record in results.load():
        assert set(record) - {"gpu"} == set(results.FIELDS), record
        assert record["module"] in BENCHMARKS and results.SKIPPED not in record["row"]


def test_quotes_are_found_outside_code_only():
    page = "\n".join([
        "a <!-- bench road: random order -->not measured<!-- /bench --> and the syntax",
        "`<!-- bench MODULE: SELECTOR -->FIGURE<!-- /bench -->`",
        "```", "<!-- bench gpu: x -->1<!-- /bench -->", "```",
    ])  # fmt: skip
    assert results.quotes(page) == [("road", "random order", "not measured")]
