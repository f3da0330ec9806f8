"""The checkpoint file: round trip, atomic write, and every kind of damage is caught by verify()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from colabkit.checkpoint.format import (
    checkpoint_name,
    read_checkpoint,
    read_state,
    step_of,
    verify,
    write_checkpoint,
)
from colabkit.errors import ConfigError, CorruptCheckpointError
from colabkit.storage import atomic

ARRAYS = {
    "model/0000": np.arange(12, dtype=np.float32).reshape(3, 4),
    "model/0001": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
    "optimizer/iterations": np.array(7, dtype=np.int64),
    "rng/seed": np.array([1, 2], dtype=np.uint32),
    "mask": np.array([True, False, True]),
    "empty": np.zeros((0, 4), dtype=np.float16),
}


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / checkpoint_name(1234)
    write_checkpoint(path, ARRAYS, {"epoch": 3, "step_in_epoch": 10, "history": {"loss": [0.5]}})
    return path


def test_names_sort_by_step_and_invert():
    assert checkpoint_name(1234) == "ckpt-000000001234.ckpt"
    assert step_of(checkpoint_name(1234)) == 1234
    assert sorted(checkpoint_name(s) for s in (10, 9, 100)) == [
        checkpoint_name(9),
        checkpoint_name(10),
        checkpoint_name(100),
    ]
    for other in [
        "ckpt-12.ckpt",
        ".ckpt-000000001234.ckpt.tmp-1-ab",
        "archive/x/ckpt-000000000001.ckpt",
        "ckpt-000000001234.ckpt.partial",
        "model.weights.h5",
    ]:
        assert step_of(other) is None
    with pytest.raises(ConfigError, match="Received: step=-1"):
        checkpoint_name(-1)


def test_round_trip_keeps_every_array_exactly_and_writable(ckpt):
    contents = read_checkpoint(ckpt)
    assert contents.name == ckpt.name
    assert list(contents.arrays) == list(ARRAYS)  # the order they were saved in
    for key, expected in ARRAYS.items():
        got = contents.arrays[key]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        assert got.flags.writeable
    assert contents.state["epoch"] == 3 and contents.state["history"] == {"loss": [0.5]}


def test_state_records_version_time_and_format(tmp_path):
    path = tmp_path / "c.ckpt"
    write_checkpoint(path, {}, {"epoch": 0}, created=1234.5)
    state = verify(path)
    assert state["created"] == 1234.5
    assert state["format_version"] == 1
    assert state["colabkit_version"]
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert set(manifest["members"]) == {"state.json"}
    assert zipfile.ZipFile(path).namelist()[-1] == "manifest.json"  # written last


def test_numpy_scalars_in_state_become_numbers(tmp_path):
    write_checkpoint(tmp_path / "c", {}, {"loss": np.float32(0.5), "epoch": np.int64(2)})
    assert verify(tmp_path / "c")["loss"] == 0.5


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({"model": object()}, r"state\['model'\]"),
        ({"history": {"loss": [0.1, np.zeros(3)]}}, r"state\['history'\]\['loss'\]\[1\]"),
        ({"by_epoch": {1: 0.5}}, r"state\['by_epoch'\]\[1\]"),
    ],
)
def test_state_that_json_cannot_hold_is_refused_naming_the_key(tmp_path, state, where):
    with pytest.raises(ConfigError, match=where):
        write_checkpoint(tmp_path / "c.ckpt", {}, state)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "arrays",
    [{"../x": np.zeros(1)}, {"a\\b": np.zeros(1)}, {"obj": np.array([None, 1])}, {"l": [1]}],
)
def test_bad_arrays_are_refused_before_writing(tmp_path, arrays):
    with pytest.raises(ConfigError):
        write_checkpoint(tmp_path / "c.ckpt", arrays, {})
    assert os.listdir(tmp_path) == []


def test_every_truncation_is_detected(ckpt, tmp_path):
    data = ckpt.read_bytes()
    cut = tmp_path / "cut.ckpt"
    for length in sorted(
        {
            0,
            1,
            10,
            100,
            len(data) // 3,
            len(data) // 2,
            len(data) - 100,
            len(data) - 22,
            len(data) - 1,
        }
    ):
        cut.write_bytes(data[:length])
        with pytest.raises(CorruptCheckpointError, match="not usable"):
            verify(cut)


def test_damage_anywhere_is_caught_or_harmless(ckpt):
    """A flipped byte either fails verification or sits in a zip field that changes nothing."""
    data = ckpt.read_bytes()
    caught = 0
    for offset in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        ckpt.write_bytes(bytes(damaged))
        try:
            contents = read_checkpoint(ckpt)
        except CorruptCheckpointError:
            caught += 1
            continue
        for key, expected in ARRAYS.items():
            np.testing.assert_array_equal(contents.arrays[key], expected)
            assert contents.arrays[key].dtype == expected.dtype
        assert contents.state["epoch"] == 3
    assert caught > 0.8 * len(range(0, len(data), 7))


def test_garbage_and_missing_manifest_are_corrupt(tmp_path):
    (tmp_path / "garbage.ckpt").write_bytes(os.urandom(5000))
    with pytest.raises(CorruptCheckpointError):
        verify(tmp_path / "garbage.ckpt")
    with zipfile.ZipFile(tmp_path / "nomanifest.ckpt", "w") as zf:
        zf.writestr("state.json", "{}")
    with pytest.raises(CorruptCheckpointError, match="no manifest"):
        verify(tmp_path / "nomanifest.ckpt")
    with pytest.raises(FileNotFoundError):
        verify(tmp_path / "absent.ckpt")


def test_member_added_after_the_manifest_is_corrupt(ckpt):
    with zipfile.ZipFile(ckpt, "a") as zf:
        zf.writestr("arrays/extra.npy", b"x")
    with pytest.raises(CorruptCheckpointError, match="disagree with the manifest"):
        verify(ckpt)


def test_failed_write_leaves_no_file_and_keeps_the_old_one(ckpt):
    before = ckpt.read_bytes()
    calls = []

    def fail_on_third_write(event, path):
        calls.append(event)
        if calls.count("write") == 3:
            raise OSError(28, "No space left on device")

    previous = atomic.set_io_hook(fail_on_third_write)
    try:
        with pytest.raises(OSError):
            write_checkpoint(ckpt, {"w": np.zeros(10)}, {"epoch": 9})
    finally:
        atomic.set_io_hook(previous)
    assert ckpt.read_bytes() == before
    assert os.listdir(ckpt.parent) == [ckpt.name]


def test_read_state_is_cheap_and_needs_no_verification(ckpt):
    assert read_state(ckpt)["epoch"] == 3


def test_verify_needs_neither_keras_nor_tensorflow(ckpt):
    code = (
        "import sys; from colabkit.checkpoint.format import verify; "
        "from colabkit.checkpoint.manager import CheckpointManager; "
        f"verify({str(ckpt)!r}); "
        "bad = [m for m in ('keras', 'tensorflow', 'jax', 'google.colab') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- dtypes the .npy header cannot name (format 2) ----------------------------------------------


def test_bfloat16_and_float8_travel_by_name_and_come_back_bitwise(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    arrays = {
        "bf16": np.array([1.5, -0.0, np.inf, np.nan], dtype=ml_dtypes.bfloat16),
        "f8": np.array([0.5, -2.0], dtype=ml_dtypes.float8_e5m2),
        "f8fn": np.array([0.5, 448.0], dtype=ml_dtypes.float8_e4m3fn),
        "plain": np.arange(3, dtype=np.float32),
    }
    path = tmp_path / "c.ckpt"
    write_checkpoint(path, arrays, {})

    got = read_checkpoint(path).arrays
    for name, value in arrays.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].tobytes() == value.tobytes(), name
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert manifest["members"]["arrays/bf16.npy"]["dtype"] == "bfloat16"
    assert "dtype" not in manifest["members"]["arrays/plain.npy"]
    assert manifest["format_version"] == 2  # an older colabkit would misread it: it must refuse


def test_a_checkpoint_of_numpy_dtypes_stays_format_1(tmp_path):
    path = tmp_path / "c.ckpt"
    write_checkpoint(path, {"a": np.ones(2, np.float16), "b": np.ones(2, bool)}, {})
    assert json.loads(zipfile.ZipFile(path).read("manifest.json"))["format_version"] == 1
    assert verify(path)["format_version"] == 1


def test_a_dtype_name_this_ml_dtypes_lacks_is_corrupt_not_a_crash(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    path = tmp_path / "c.ckpt"
    write_checkpoint(path, {"w": np.ones(2, dtype=ml_dtypes.bfloat16)}, {})
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["members"]["arrays/w.npy"]["dtype"] = "bfloat17"
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CorruptCheckpointError, match="bfloat17"):
        read_checkpoint(path)


def test_a_dtype_no_checkpoint_can_hold_is_refused_at_the_first_save_naming_the_variable():
    from colabkit.training.host import check_storable

    class Variable:
        path = "custom/packed"
        dtype = "void24"

    with pytest.raises(ConfigError) as refused:
        check_storable([Variable()], [np.zeros(2, dtype="V3")])
    message = str(refused.value)
    assert "\n" not in message and "custom/packed" in message and "void24" in message


def test_bfloat16_bytes_saved_before_format_2_are_restored_as_the_variables_values():
    """Older colabkit stored bfloat16 as raw bytes (``<V2``); its checkpoints still load."""
    import keras
    import ml_dtypes

    from colabkit.training.state import restore_variables

    layer = keras.layers.Dense(3, dtype="bfloat16")
    model = keras.Sequential([keras.Input((2,)), layer])
    kernel = (np.arange(6, dtype=np.float32).reshape(2, 3) / 7).astype(ml_dtypes.bfloat16)
    bias = np.array([1.0, -2.0, 0.5], dtype=ml_dtypes.bfloat16)
    old = {"model/0000": kernel.view("V2"), "model/0001": bias.view("V2")}
    restore_variables(model, old, metrics=False)
    assert keras.ops.convert_to_numpy(layer.kernel).tobytes() == old["model/0000"].tobytes()
    assert keras.ops.convert_to_numpy(layer.bias).tobytes() == old["model/0001"].tobytes()
