"""Bad input: one clear line on stderr and a nonzero exit, before any training."""

import pytest


@pytest.mark.parametrize(
    "override,message",
    [
        ("method=nonexistent", "method: no option 'nonexistent'; available:"),
        ("method=[fullgrad,nope]", "method: no option 'nope'"),
        ("roar.fractions=[0.5,1.0]", "roar.fractions: 1.0 is outside [0, 1)"),
        ("roar.fractions=[-0.1]", "roar.fractions: -0.1 is outside [0, 1)"),
        ("trainer.max_epochs=-3", "trainer.max_epochs: -3 must be a positive integer"),
        ("method=[fullgrad", "cannot parse the overrides: "),
    ],
)
def test_bad_override_fails_with_one_line_before_training(run_roar, tmp_path, override, message):
    done = run_roar(override, "logger=none", "hydra.run.dir=run")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == [f"roar: error: {message}"] or (len(lines) == 1 and message in lines[0]), done.stderr
    assert not (tmp_path / "cache").exists()  # nothing was trained or computed


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
    assert text.index("== Overrides used first ==") < text.index("method: all, fullgrad,")
    assert "docs/configuration.md" in text.split("method: all, fullgrad,")[1]
    assert not (tmp_path / "outputs").exists()  # help runs nothing
