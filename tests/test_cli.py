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
