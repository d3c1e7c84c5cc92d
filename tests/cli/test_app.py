"""Bad input: one clear line on stderr and exit status 2, before any data loads or training."""

import pytest
from omegaconf import OmegaConf

from roar.conf import CONFIG_DIR
from roar.config.schema import schema_error
from tests.conftest import compose_config


@pytest.mark.parametrize(
    "override,message",
    [
        ("method=nonexistent", "method: no option 'nonexistent'; available:"),
        ("method=[fullgrad,nope]", "method: no option 'nope'"),
        ("roar.fractions=[0.5,1.0]", "roar.fractions[1]: 1.0: input should be less than 1"),
        ("roar.fractions=[-0.1]", "roar.fractions[0]: -0.1: input should be greater than or equal to 0"),
        ("trainer.max_epochs=-3", "trainer.max_epochs: -3: input should be greater than or equal to 1"),
        ("method=[fullgrad", "cannot parse the overrides: "),
        # What a chaos run found getting past the checks (issue 15, case 7): a traceback after training had
        # started, a traceback before it, or a value taken for another (true as one epoch).
        ("roar.saliency_batch_size=0",
         "roar.saliency_batch_size: 0: input should be greater than or equal to 1"),
        ("dataset.datamodule.batch_size=0",
         "dataset.datamodule.batch_size: 0: input should be greater than or equal to 1"),
        ("seed=1.5", "seed: 1.5: input should be a valid integer"),
        ("method.random.seed=abc", "method.random.seed: 'abc': input should be a valid integer"),
        ("dataset.datamodule.val_fraction=1.0",
         "dataset.datamodule.val_fraction: 1.0: input should be less than 1"),
        ("model.optimizer.lr=-1", "model.optimizer.lr: -1: input should be greater than 0"),
        ("trainer.devices=0",
         "trainer.devices: 0: give a positive number of devices, -1 (all), auto, or a list"),
        ("trainer.max_epochs=true", "trainer.max_epochs: True: input should be a valid integer"),
        # Hydra's own refusals, one line too.
        ("roar.fracions=[0.1]",
         "Could not override 'roar.fracions'. To append to your config use +roar.fracions=[0.1]"),
    ],
)  # fmt: skip
def test_bad_override_fails_with_one_line_before_training(run_roar, tmp_path, override, message):
    done = run_roar(override, "method=[fullgrad,random]", "logger=none", "hydra.run.dir=run")
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"roar: error: {message}"), line
    assert not (tmp_path / "cache").exists()  # nothing was trained or computed


def test_the_digit_splits_must_leave_training_images(tmp_path):
    cfg = compose_config(
        tmp_path, "dataset.datamodule.val_fraction=0.5", "dataset.datamodule.test_fraction=0.5"
    )
    assert schema_error(_values(cfg)) == (
        "dataset.datamodule: val_fraction + test_fraction is 1: it must stay below 1 to leave training images"
    )


def _values(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


GROUPS = ("dataset", "model", "trainer", "task", "logger", "method", "experiment")


@pytest.mark.parametrize(
    "override",
    [f"{group}={option.stem}" for group in GROUPS for option in sorted((CONFIG_DIR / group).glob("*.yaml"))],
)
def test_the_schema_accepts_every_option_in_conf(tmp_path, override):
    # imagefolder leaves its root to the command line, and reads its classes and channels from it.
    folder = ["dataset.root=/data", "dataset.num_classes=5", "dataset.channels=3"]
    given = folder if override == "dataset=imagefolder" else []
    assert schema_error(_values(compose_config(tmp_path, override, *given))) is None


def test_help_says_what_roar_is_its_commands_first_overrides_and_docs_then_the_groups(run_roar, tmp_path):
    done = run_roar("--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("roar: remove and retrain (ROAR) for saliency methods")
    assert "powered by Hydra" not in text
    for command in ("roar [KEY=VALUE ...]", "roar-report DIR"):
        assert command in text
    for override in ("experiment=digits", "method=paper", "roar.fractions=", "seeds=[0,1,2]", "trainer=gpu"):
        assert override in text
    # The groups, as Hydra lists them, after the hand-written part; then where the documentation is.
    groups = text.index("method: all, ")  # the method group's options, listed by Hydra
    assert text.index("== Overrides used first ==") < groups
    assert "docs/configuration.md" in text[groups:]
    assert not (tmp_path / "outputs").exists()  # help runs nothing
