"""Benchmarking a user's own method, model and dataset: one mechanism for every method (`_target_`), the
contract checked on one batch before anything is computed over the dataset, stale code never reused, roar
as a library (`roar.run`, `roar.compose`), and the examples/ package end to end."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import captum.attr
import pytest
import torch
from omegaconf import OmegaConf

import roar
from roar import saliency
from roar.config import ConfigError, validate
from roar.models import SmallCNN
from roar.stages import MethodError, saliency_spec
from tests.conftest import REPO, compose_config, run_command, succeeded
from tests.user_methods import InputTimesGradient, input_times_gradient

EXAMPLES = REPO / "examples"
SEARCHPATH = "hydra.searchpath=[pkg://roar_example.conf]"
# The example's benchmark, tiny: one fraction, one epoch.
EXAMPLE = [SEARCHPATH, "experiment=bars", "roar.fractions=[0.5]", "trainer.max_epochs=1", "logger=none"]


def _model():
    torch.manual_seed(0)
    return SmallCNN(in_channels=2, num_classes=5, widths=(8, 8)).eval()


def _batch():
    return torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(4) % 5


def test_create_takes_a_name_a_config_a_class_a_function_or_an_attribution():
    model, (images, targets) = _model(), _batch()
    expected = saliency.create("input_x_gradient", model).pixel_maps(images, targets)
    for method in (
        {"_target_": "captum.attr.InputXGradient"},
        OmegaConf.create({"_target_": "tests.user_methods.input_times_gradient", "scale": 1.0}),
        captum.attr.InputXGradient,
        InputTimesGradient,
        input_times_gradient,
        captum.attr.InputXGradient(model),
    ):
        torch.testing.assert_close(saliency.create(method, model).pixel_maps(images, targets), expected)
    # Parameters reach the target; a config's reduce is used unless one is given.
    doubled = saliency.create(input_times_gradient, model, scale=2.0).pixel_maps(images, targets)
    torch.testing.assert_close(doubled, 2 * expected)
    signed = {"_target_": "captum.attr.InputXGradient", "reduce": "sum"}
    assert saliency.create(signed, model).reduce == "sum"
    assert saliency.create(signed, model, reduce="abs_max").reduce == "abs_max"


def test_every_shipped_method_is_a_config_with_a_target(tmp_path):
    assert "fullgrad" in saliency.available() and "paper" not in saliency.available()
    cfg = compose_config(tmp_path, "method=all")
    for name, node in cfg.method.items():
        assert "_target_" in node, name


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+method.mine.scale=2", "method.mine: no _target_"),
        ("+method.mine._target_=tests.user_methods.nothing_here", "method.mine: _target_ 'tests.user_met"),
        ("+method.mine._target_=no_such_package.method", "method.mine: _target_ 'no_such_package.m.* cannot"),
        ("+method.mine._target_=tests.user_methods.raises", None),  # takes no parameters: it is fine
        ("method.fullgrad.rescale=sideways", "method.fullgrad: .*sideways"),
        ("+method.fullgrad.nope=1", "method.fullgrad: .*nope"),
        ("method.gradcam.reduce=median", "method.gradcam: unknown pixel reduction"),
    ],
)  # fmt: skip
def test_a_method_config_that_cannot_work_is_one_line_before_anything_runs(tmp_path, override, message):
    cfg = compose_config(tmp_path, "method=[fullgrad,gradcam]", override)
    if message is None:
        validate(cfg)
        return
    with pytest.raises(ConfigError, match=message) as error:
        validate(cfg)
    assert "\n" not in str(error.value)


def test_a_parameter_the_users_function_does_not_take_is_reported(tmp_path):
    cfg = compose_config(tmp_path, "method=[random]", "+method.mine._target_=tests.user_methods.raises",
                         "+method.mine.radius=3")  # fmt: skip
    with pytest.raises(ConfigError, match="method.mine: .*radius"):
        validate(cfg)


def test_editing_a_users_method_changes_its_cache_key(tmp_path, monkeypatch):
    module = tmp_path / "my_saliency.py"
    module.write_text("def method(model, inputs, targets):\n    return inputs\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose_config(tmp_path, "method=[fullgrad]", "+method.mine._target_=my_saliency.method")
    before = saliency_spec(cfg, "mine")
    module.write_text("def method(model, inputs, targets):\n    return inputs.abs()\n")
    after = saliency_spec(cfg, "mine")
    assert before["source"] != after["source"] and before["target"] == "my_saliency.method"
    # roar's own methods and Captum's are versioned by their releases: no source hash.
    shipped = compose_config(tmp_path, "method=[fullgrad,input_gradient]")
    for name in ("fullgrad", "input_gradient"):  # a roar class and a Captum one
        # (and the CPU thread count, as every stage computed on the CPU: docs/threads.md)
        expected = {"base", "method", "target", "params", "reduce", "cpu_threads"}
        assert set(saliency_spec(shipped, name)) == expected
    # A shipped name pointed at another target is another method: its maps are not reused.
    moved = compose_config(
        tmp_path, "method=[fullgrad]", "method.fullgrad._target_=roar.saliency.SimpleFullGrad"
    )
    assert saliency_spec(moved, "fullgrad")["target"] == "roar.saliency.SimpleFullGrad"


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    """One cache for the module's runs on digits: the base model is trained once."""
    return tmp_path_factory.mktemp("contract")


BAD = [
    ("wrong_shape", "returned shape (4, 1, 8, 7) for inputs (4, 1, 8, 8); expected (4, 1, 8, 8)"),
    ("not_finite", "returned 1 NaN or infinite values of 256"),
    ("elsewhere", "returned a tensor on meta; the inputs are on cpu"),
    ("raises", "raised RuntimeError: my method broke"),
]


def _digits(root: Path, run: str, *overrides: str) -> list[str]:
    return [f"paths.root_dir={root}", f"hydra.run.dir={root}/{run}", "trainer.max_epochs=1",
            "roar.fractions=[0.5]", "logger=none", *overrides]  # fmt: skip


@pytest.mark.parametrize(("name", "message"), BAD)
def test_a_broken_method_stops_the_run_before_any_saliency_stage_or_retraining(shared_root, name, message):
    overrides = _digits(
        shared_root, name, "method=[random]", f"+method.{name}._target_=tests.user_methods.{name}"
    )
    with pytest.raises(MethodError) as error:
        roar.run(overrides)
    assert str(error.value) == f"method.{name}: {message}"
    # Only the base model was trained; no map was computed, nothing retrained.
    assert len(list((shared_root / "cache" / "train").glob("*/manifest.json"))) == 1
    assert not (shared_root / "cache" / "saliency").exists()


def test_the_command_reports_a_broken_method_in_one_line_with_status_2(shared_root, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    overrides = _digits(
        shared_root, "cli", "method=[random]", "+method.bad._target_=tests.user_methods.not_finite"
    )
    done = run_command("roar", *overrides, cwd=shared_root)
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1]
        == "roar: error: method.bad: returned 1 NaN or infinite values of 256"
    )
    assert not (shared_root / "cache" / "saliency").exists()


def test_compose_checks_as_the_command_does(tmp_path):
    cfg = roar.compose(["method=[fullgrad,random]", f"paths.root_dir={tmp_path}"])
    assert list(cfg.method) == ["fullgrad", "random"] and Path(cfg.paths.output_dir).is_absolute()
    with pytest.raises(ConfigError, match=r"roar.fractions\[0\]: 1.5: input should be less than 1"):
        roar.compose(["roar.fractions=[1.5]"])
    with pytest.raises(ConfigError, match="method: no option 'nope'"):
        roar.compose(["method=nope"])


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """examples/ importable (as if installed beside roar), in this process and in the commands it starts."""
    root = tmp_path_factory.mktemp("example")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join([str(EXAMPLES), str(REPO)]))
        patch.syspath_prepend(str(EXAMPLES))
        yield root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_the_example_package_runs_end_to_end(example):
    root = example
    # The ROAR grid through the command: the example's method, model and dataset, by name.
    done = succeeded(run_command("roar", *EXAMPLE, "hydra.run.dir=grid", cwd=root))
    assert done.stdout.strip().endswith(f"run directory: {root / 'grid'}")
    rows = _rows(root / "grid" / "results.csv")
    assert {(r["method"], float(r["fraction"])) for r in rows} == {
        (m, f) for m in ("box_gradient", "fullgrad", "random") for f in (0.0, 0.5)
    }
    # The gallery of the same methods, on the same (cached) base model.
    succeeded(run_command("roar", *EXAMPLE, "task=explain", "explain.num_images=2", "hydra.run.dir=gallery",
                          cwd=root))  # fmt: skip
    assert (root / "gallery" / "gallery.png").is_file()
    # A 2-job multirun over the methods, then its report: the grid's cells, reused from the cache.
    succeeded(run_command("roar", "-m", *EXAMPLE, "method=box_gradient,random", "hydra.sweep.dir=sweep",
                          cwd=root))  # fmt: skip
    jobs = sorted(p.parent for p in (root / "sweep").glob("*/results.csv"))
    assert len(jobs) == 2
    assert {r["status"] for job in jobs for r in _rows(job / "stages.csv")} == {"reused"}
    succeeded(run_command("roar-report", "sweep", cwd=root))
    report = {(r["method"], r["fraction"], r["test_acc"]) for r in _rows(root / "sweep" / "results.csv")}
    assert report == {(r["method"], r["fraction"], r["test_acc"]) for r in rows if r["method"] != "fullgrad"}
    # The same grid through the library: the same rows, from the same cache.
    result = roar.run([*EXAMPLE, f"paths.root_dir={root}", f"hydra.run.dir={root}/library"])
    assert result.dir == root / "library"
    assert [(r["method"], r["fraction"], r["test_acc"]) for r in result.rows] == [
        (r["method"], float(r["fraction"]), float(r["test_acc"])) for r in rows
    ]
    assert "box_gradient" in result.summary and "Ranking" in result.summary
    assert {r["status"] for r in _rows(result.dir / "stages.csv")} == {"reused"}
