"""One validator per kind of value, worded by each caller from the error's fields."""

from __future__ import annotations

import numpy as np
import pytest

import colabkit
from colabkit.cli import main
from colabkit.errors import ConfigError
from colabkit.mnist import MnistConfig, command_line_options
from colabkit.validate import (
    flag,
    fraction,
    natural_int,
    one_of,
    optional,
    positive_int,
    renamed_attribute,
)


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


@pytest.mark.parametrize(
    ("make", "bad", "expected"),
    [
        (lambda: natural_int, -1, "an integer >= 0"),
        (lambda: natural_int, 2.0, "an integer >= 0"),
        (lambda: fraction, 1.0, "a float in [0, 1)"),
        (lambda: fraction, False, "a float in [0, 1)"),
        (lambda: fraction, "0.1", "a float in [0, 1)"),
        (lambda: fraction, float("nan"), "a float in [0, 1)"),
        (lambda: fraction, float("-inf"), "a float in [0, 1)"),
        (lambda: fraction, -0.1, "a float in [0, 1)"),
        (lambda: flag, 1, "True or False"),
        (lambda: flag, "yes", "True or False"),
        (lambda: one_of(("tensorflow", "jax")), "torch", "one of tensorflow, jax"),
        (lambda: optional(positive_int), 0, "an integer >= 1"),
    ],
)
def test_each_validator_names_the_argument_echoes_the_value_and_says_what_it_expects(
    make, bad, expected
):
    with pytest.raises(ConfigError) as refused:
        make()("option", bad)  # made here, not when the module is read
    error = refused.value
    assert (error.argument, error.value, error.expected) == ("option", bad, expected)
    assert type(error.value) is type(bad)
    assert str(error) == (
        f"Invalid value for argument `option`. Received: option={bad!r}. Expected {expected}."
    )


def test_optional_checks_and_converts_what_is_not_none():
    assert optional(positive_int)("epochs", np.int64(3)) == 3
    assert type(optional(positive_int)("epochs", np.int64(3))) is int
    assert optional(flag)("fresh", False) is False


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


def test_both_names_at_once_are_refused_naming_the_old_one(tmp_path):
    from colabkit.checkpoint import CheckpointManager

    old = tmp_path / "b"
    with pytest.raises(ConfigError) as refused:
        CheckpointManager(tmp_path / "s", cache_dir=tmp_path / "a", staging_dir=old)
    error = refused.value
    expected = "None: it is the old name of `cache_dir`, given too"
    assert (error.argument, error.value, error.expected) == ("staging_dir", old, expected)
    assert str(error) == (
        f"Invalid value for argument `staging_dir`. Received: staging_dir={old!r}. "
        f"Expected {expected}."
    )


def test_the_deprecation_warnings_point_at_the_line_that_uses_the_old_name(tmp_path):
    """Python shows the file and line a DeprecationWarning names: the user's, not colabkit's.

    Not run under mutmut (bench/mutation.py): its trampolines add stack frames to every function
    of the module they mutate, so a stacklevel cannot hold there (docs/mutants.md).

    The old names are used here, in the test's own body, not through a helper shared with the
    next test: a helper in this file adds a frame of this file, and a stacklevel one too deep
    would still name this file and pass."""
    from colabkit.checkpoint import CheckpointManager

    class Run:
        cache = "/content/cache"
        staging = renamed_attribute("staging", "cache")

    with pytest.warns(DeprecationWarning) as argument:
        manager = CheckpointManager(tmp_path / "s", staging_dir=tmp_path / "b")
    with pytest.warns(DeprecationWarning) as attribute:
        assert manager.staging == tmp_path / "b"
    manager.close()
    with pytest.warns(DeprecationWarning) as yours:
        assert Run().staging == "/content/cache"
    for warned in (argument, attribute, yours):
        assert [w.filename for w in warned] == [__file__]


def test_a_renamed_name_warns_in_one_line_and_reads_the_new_one(tmp_path):
    from colabkit.checkpoint import CheckpointManager

    class Run:
        cache = "/content/cache"
        staging = renamed_attribute("staging", "cache")

    with pytest.warns(DeprecationWarning) as argument:
        manager = CheckpointManager(tmp_path / "s", staging_dir=tmp_path / "b")
    with pytest.warns(DeprecationWarning) as attribute:
        assert manager.staging == tmp_path / "b"
    manager.close()
    with pytest.warns(DeprecationWarning) as yours:
        assert Run().staging == "/content/cache"
    for warned, old, new in [
        (argument, "staging_dir", "cache_dir"),
        (attribute, "staging", "cache"),
        (yours, "staging", "cache"),
    ]:
        assert [str(w.message) for w in warned] == [
            f"`{old}` is now called `{new}`; `{old}` stops working in colabkit 0.3."
        ]
    assert Run.staging.__doc__ == "Deprecated: the old name of ``cache`` (gone in colabkit 0.3)."
