"""One validator per kind of value, worded by each caller from the error's fields."""

from __future__ import annotations

import numpy as np
import pytest

import colabkit
from colabkit.cli import main
from colabkit.errors import ConfigError
from colabkit.mnist import MnistConfig, command_line_options
from colabkit.validate import flag, fraction, natural_int, one_of, optional, positive_int


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, "3", None])
def test_positive_int_refuses_what_is_not_one_and_names_it(bad):
    with pytest.raises(ConfigError) as refused:
        positive_int("epochs", bad)
    error = refused.value
    assert (error.argument, error.value, error.expected) == ("epochs", bad, "an integer >= 1")
    assert str(error) == (
        f"Invalid value for argument `epochs`. Received: epochs={bad!r}. Expected an integer >= 1."
    )


def test_numpy_integers_pass_as_ints_and_none_passes_where_optional():
    assert type(positive_int("epochs", np.int64(3))) is int
    assert natural_int("seed", 0) == 0 and optional(natural_int)("seed", None) is None
    assert fraction("validation_split", 0.1) == 0.1
    assert flag("fresh", False) is False and one_of(("a", "b"))("kind", "b") == "b"
    for check, bad in [(fraction, 1.0), (flag, 1), (one_of(("a",)), "b"), (natural_int, -1)]:
        with pytest.raises(ConfigError):
            check("x", bad)


def test_fit_the_config_and_the_policies_refuse_alike(tmp_path):
    """The same value is refused with the same words wherever it is given."""
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    x = np.zeros((4, 2), "float32")
    expected = "Received: epochs=True. Expected an integer >= 1."
    with pytest.raises(ConfigError, match=expected):
        colabkit.fit(model, x, x[:, :1], run_dir=tmp_path / "run", epochs=True)
    with pytest.raises(ConfigError, match=expected):
        MnistConfig(run_dir=str(tmp_path / "run"), epochs=True)
    with pytest.raises(ConfigError, match="Received: k=True. Expected an integer >= 1."):
        colabkit.checkpoint.KeepLast(True)
    assert not (tmp_path / "run").exists()  # nothing written


def test_every_config_option_is_declared_once_and_reaches_the_command_line():
    """Each option comes from its field: the flag parses to that field, with its default."""
    options = command_line_options()
    assert "validation_split" not in options  # a field without an option stays off the CLI
    assert {"epochs", "keep", "store", "fresh", "run_dir"} <= set(options)
    for name, (option, default, _check) in options.items():
        assert option.flag == "--" + name.replace("_", "-")
        declared = MnistConfig.__dataclass_fields__[name].default
        assert declared is default or (name == "run_dir" and default is None)


def test_the_command_builds_the_config_from_its_options_and_the_default_run_dir(
    tmp_path, monkeypatch
):
    """What `colabkit train mnist` passes on: each option's value, and without --run-dir the
    default run directory (not a placeholder)."""
    from colabkit import mnist

    built = []

    def train(config):
        built.append(config)
        raise mnist.TrainingStopped("stopped for the test")

    monkeypatch.setattr(mnist, "train", train)
    monkeypatch.setattr(mnist, "default_run_dir", lambda: str(tmp_path / "default-run"))
    assert main(["train", "mnist", "--epochs", "2", "--keep", "1", "--fresh"]) == 75
    (config,) = built
    assert config.run_dir == str(tmp_path / "default-run")
    assert (config.epochs, config.keep, config.fresh, config.batch_size) == (2, 1, True, 128)


def test_the_command_line_names_its_option_from_the_error_fields(capsys, tmp_path):
    assert main(["train", "mnist", "--run-dir", str(tmp_path), "--batch-size", "-5"]) == 1
    err = capsys.readouterr().err
    assert err == "Error: Invalid value for --batch-size. Received: -5. Expected an integer >= 1.\n"


def test_the_renamed_staging_dir_still_works_for_a_release_with_a_warning(tmp_path):
    """colabkit 0.2's ``staging_dir`` is ``cache_dir`` now: old notebooks keep running."""
    import keras

    from colabkit.checkpoint import CheckpointManager

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    x = np.zeros((4, 2), "float32")
    with pytest.warns(DeprecationWarning, match="`staging_dir` is now called `cache_dir`"):
        colabkit.fit(
            model, x, x[:, :1], run_dir=tmp_path / "run", epochs=1, verbose=0,
            staging_dir=tmp_path / "old-name", session_limit=False,
        )  # fmt: skip
    assert any((tmp_path / "old-name").iterdir())  # the folder it names is the one used
    with pytest.raises(ConfigError, match="staging_dir"):  # both names: refused, not guessed
        CheckpointManager(tmp_path / "s", cache_dir=tmp_path / "a", staging_dir=tmp_path / "b")
    with pytest.warns(DeprecationWarning):
        manager = CheckpointManager(tmp_path / "s", staging_dir=tmp_path / "b")
    with pytest.warns(DeprecationWarning):
        assert manager.staging == manager.cache == tmp_path / "b"
    manager.close()
