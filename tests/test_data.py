"""tuning.data: where the arrays come from, how they are split, and what a user reads when they are missing or
wrong.

Fast: small .npz files written into tmp_path (MNIST itself is never copied), no TensorFlow. Wrong data goes through
``tuning run`` (in-process) and ``tuning.run(data=...)``: refused with exit 2 before anything is written.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_space

import tuning
from tuning import data
from tuning.cli import main
from tuning.data import DATA_DIR_ENV
from tuning.errors import DataError, UserInputError
from tuning.space import SearchSpace


def arrays(n_train: int = 100, n_test: int = 30, offset: int = 0) -> dict[str, np.ndarray]:
    """MNIST-shaped uint8 images whose first pixel holds the row number (plus ``offset``), labels 0..9."""
    x_train = np.zeros((n_train, 28, 28), "uint8")
    x_train[:, 0, 0] = (np.arange(n_train) + offset) % 256
    x_test = np.full((n_test, 28, 28), 255, "uint8")
    return {"x_train": x_train, "y_train": np.arange(n_train) % 10,
            "x_test": x_test, "y_test": (np.arange(n_test) + 3) % 10}


def write_npz(path: Path, **overrides: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{**arrays(), **overrides})
    return path


@pytest.fixture(autouse=True)
def _no_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test decides itself whether $TUNING_DATA_DIR is set."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def test_npz_by_file_path(tmp_path: Path) -> None:
    file = write_npz(tmp_path / "digits.npz")
    ds = data.load("mnist", path=file, validation_split=0.2)
    assert ds.name == "mnist"
    assert ds.x_train.shape == (80, 28, 28, 1) and ds.x_val.shape == (20, 28, 28, 1)
    assert ds.x_test.shape == (30, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and float(ds.x_test.max()) == 1.0  # scaled from 0..255 to 0..1
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10


def test_npz_by_folder_uses_dataset_name(tmp_path: Path) -> None:
    write_npz(tmp_path / "fashion_mnist.npz", x_test=np.zeros((7, 28, 28), "uint8"), y_test=np.zeros(7, "int64"))
    write_npz(tmp_path / "mnist.npz")
    ds = data.load("fashion_mnist", path=tmp_path)
    assert len(ds.x_test) == 7


def test_tuning_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_npz(tmp_path / "mnist.npz", x_test=np.zeros((11, 28, 28), "uint8"), y_test=np.zeros(11, "int64"))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert len(data.load("mnist").x_test) == 11


def test_explicit_path_wins_over_tuning_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_npz(tmp_path / "env" / "mnist.npz", x_test=np.zeros((5, 28, 28), "uint8"), y_test=np.zeros(5, "int64"))
    mine = write_npz(tmp_path / "mine.npz")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert len(data.load("mnist", path=mine).x_test) == 30


def test_load_spec_reads_the_space_data_section(tmp_path: Path) -> None:
    file = write_npz(tmp_path / "d.npz")
    space = SearchSpace.from_dict({
        "data": {"path": str(file), "train_size": 50, "validation_split": 0.2, "test_size": 10},
        "model": {"family": "mlp"}, "train": {"epochs": 1},
    })
    ds = data.load_spec(space.data)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (40, 10, 10)


def test_arrays_from_python_tuple_and_mapping() -> None:
    a = arrays()
    from_tuple = data.from_arrays((a["x_train"], a["y_train"], a["x_test"], a["y_test"]), validation_split=0.1)
    from_mapping = data.from_arrays(a, validation_split=0.1)
    assert from_tuple.x_train.shape == (90, 28, 28, 1) and from_tuple.x_val.shape == (10, 28, 28, 1)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(from_tuple, name), getattr(from_mapping, name))


def test_train_size_and_validation_split_sizes() -> None:
    ds = data.from_arrays(arrays(n_train=100), train_size=60, validation_split=0.25)
    assert (len(ds.x_train), len(ds.x_val)) == (45, 15)
    ds = data.from_arrays(arrays(n_train=100), validation_split=0.1667)
    assert (len(ds.x_train), len(ds.x_val)) == (83, 17)
    ds = data.from_arrays(arrays(n_train=100), validation_split=0.0)  # at least one validation image
    assert (len(ds.x_train), len(ds.x_val)) == (99, 1)


def test_train_and_validation_are_disjoint_and_seeded() -> None:
    a = arrays(n_train=200)
    ds = data.from_arrays(a, train_size=150, validation_split=0.2, seed=3)
    ids = lambda x: set(np.rint(x[:, 0, 0, 0] * 255).astype(int))  # noqa: E731  the row number in pixel 0
    train, val = ids(ds.x_train), ids(ds.x_val)
    assert len(train) == 120 and len(val) == 30 and not train & val
    same = data.from_arrays(a, train_size=150, validation_split=0.2, seed=3)
    other = data.from_arrays(a, train_size=150, validation_split=0.2, seed=4)
    np.testing.assert_array_equal(ds.x_val, same.x_val)
    assert ids(other.x_val) != val


def test_test_set_is_kept_apart_and_in_order() -> None:
    a = arrays(n_train=100, n_test=30)
    a["x_test"] = np.zeros((30, 28, 28), "uint8")
    a["x_test"][:, 0, 0] = 200 + np.arange(30)
    ds = data.from_arrays(a, train_size=50, validation_split=0.2, test_size=12, seed=1)
    np.testing.assert_array_equal(np.rint(ds.x_test[:, 0, 0, 0] * 255), 200 + np.arange(12))
    np.testing.assert_array_equal(ds.y_test, (np.arange(12) + 3) % 10)
    seen = set(np.rint(np.concatenate([ds.x_train, ds.x_val])[:, 0, 0, 0] * 255).astype(int))
    assert not seen & set(range(200, 230))  # no test image in training or validation


def test_missing_file_says_where_and_how(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mnist.npz"
    with pytest.raises(DataError) as info:
        data.load("mnist", path=missing)
    message = str(info.value)
    assert str(missing) in message and "Fix:" in message and ".npz" in message
    assert isinstance(info.value, UserInputError)


@pytest.mark.slow
def test_no_local_copy_and_no_network_says_how_to_provide_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An offline machine without mnist.npz: the failed Keras download becomes a DataError with the fix."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))  # no cached download
    # urllib caches its first opener with the proxies of that moment: keep the dead proxy out of later tests.
    monkeypatch.setattr(urllib.request, "_opener", None)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # the discard port: the download is refused at once
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(DataError) as info:
        data.load("mnist")
    message = str(info.value)
    assert "the Keras download failed" in message and f"${DATA_DIR_ENV} is not set" in message
    assert f"{DATA_DIR_ENV}=<folder>" in message and "mnist.npz" in message and "--data-dir" in message
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(DataError, match=f"Looked locally in: {tmp_path / 'empty' / 'mnist.npz'}"):
        data.load("mnist")


def test_empty_data_dir_unknown_dataset_lists_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DataError) as info:
        data.load("my_digits")
    message = str(info.value)
    assert str(tmp_path / "my_digits.npz") in message and "data.path" in message


def test_wrong_arrays_in_npz(tmp_path: Path) -> None:
    file = tmp_path / "wrong.npz"
    np.savez(file, images=np.zeros((3, 28, 28)), labels=np.zeros(3))
    with pytest.raises(DataError) as info:
        data.load("mnist", path=file)
    message = str(info.value)
    assert str(file) in message and "x_train" in message and "images" in message and "Fix:" in message


def test_file_that_is_not_npz(tmp_path: Path) -> None:
    file = tmp_path / "mnist.npz"
    file.write_text("not a zip archive")
    with pytest.raises(DataError, match="cannot read .*mnist.npz"):
        data.load("mnist", path=tmp_path)


def test_wrong_python_arrays() -> None:
    a = arrays()
    with pytest.raises(DataError, match="no array y_test"):
        data.from_arrays({k: v for k, v in a.items() if k != "y_test"})
    with pytest.raises(DataError, match="Received 3 arrays"):
        data.from_arrays((a["x_train"], a["y_train"], a["x_test"]))
    with pytest.raises(DataError, match="x_train has 100 rows but y_train has 99"):
        data.from_arrays((a["x_train"], a["y_train"][:99], a["x_test"], a["y_test"]))
    with pytest.raises(DataError, match="train_size is larger"):
        data.from_arrays(a, train_size=101)
    with pytest.raises(DataError, match="leaves no training image"):
        data.from_arrays(a, train_size=4, validation_split=0.9)


def test_num_classes_counts_a_class_only_the_test_set_has() -> None:
    a = arrays(n_train=40)
    a["y_train"] = np.arange(40) % 9  # digits 0-8 only, as a tiny train_size can give
    ds = data.from_arrays(a, validation_split=0.25)
    assert ds.num_classes == 10  # the test set has 9s: the model needs an output for them


def test_chance_accuracy_is_the_majority_class_rate() -> None:
    a = arrays(n_train=100)
    a["y_train"] = np.where(np.arange(100) < 70, 1, 2)
    ds = data.from_arrays(a, validation_split=0.5, seed=0)
    assert ds.chance_accuracy == np.bincount(ds.y_val).max() / len(ds.y_val)
    assert 0.5 < ds.chance_accuracy < 0.9


def test_an_npz_holding_python_objects_is_refused_not_unpickled(tmp_path: Path) -> None:
    file = tmp_path / "objects.npz"
    labels = np.zeros(2, "uint8")
    np.savez(file, x_train=np.array([{"a": 1}, None], dtype=object), y_train=labels, x_test=labels, y_test=labels)
    with pytest.raises(DataError, match="never unpickled") as info:
        data.load("mnist", path=file)
    assert str(file) in str(info.value) and "numpy.savez" in str(info.value)


# ------------------------------------------------------------------------------- arrays no model can learn from


def _float_images(n: int, value: float = 0.5) -> np.ndarray:
    x = np.random.default_rng(n).random((n, 28, 28)).astype("float32")
    x[n // 2, 2, 3] = value
    return x


def _labels_from(n: int, bad: dict[int, float]) -> np.ndarray:
    y = (np.arange(n) % 10).astype("float64")
    for i, v in bad.items():
        y[i] = v
    return y


#: Wrong arrays (what replaces the good ones of ``arrays()``: 100 training and 30 test images, labels 0..9) and
#: what the message must say: what is wrong and the first offending value, index or shape.
WRONG: dict[str, tuple[dict[str, np.ndarray], list[str]]] = {
    # 10 classes numbered 19, 39, ..., 199: 200 output units, 190 of them for no class (validation accuracy ~0).
    "labels far above the class count": (
        {"y_train": (np.arange(100) % 10) * 20 + 19, "y_test": (np.arange(30) % 10) * 20 + 19},
        ["10 distinct labels in y_train and y_test, from 19 to 199", "200 output units for 10 classes",
         "the first is 0", "renumber them 0..9", "np.searchsorted"]),
    "labels 1..10 (numbered from 1)": (
        {"y_train": np.arange(100) % 10 + 1, "y_test": np.arange(30) % 10 + 1},
        ["from 1 to 10", "the first is 0", "11 output units for 10 classes"]),
    "labels are the row numbers": (
        {"y_train": np.arange(100), "y_test": np.arange(30)},
        ["looks like row numbers or IDs", "100 distinct labels for 100 images"]),
    "negative labels": (
        {"y_train": np.where(np.arange(100) == 7, -1, np.arange(100) % 10)},
        ["y_train holds negative labels", "y_train[7] = -1", "1 of 100 labels are negative"]),
    "a single class": (
        {"y_train": np.ones(100, "int64"), "y_test": np.arange(30) % 2},
        ["y_train holds a single class", "all 100 labels are 1"]),
    "fractional labels": (
        {"y_train": _labels_from(100, {2: 3.7})}, ["not whole numbers", "y_train[2] = 3.7", "1 of 100 labels"]),
    "a NaN label": ({"y_test": _labels_from(30, {4: np.nan})}, ["y_test[4] = nan"]),
    "one-hot labels": (
        {"y_train": np.eye(10)[np.arange(100) % 10], "y_test": np.eye(10)[np.arange(30) % 10]},
        ["y_train is one-hot encoded", "shape (100, 10)", "y_train.argmax(axis=1)"]),
    "two label columns": (
        {"y_train": np.stack([np.arange(100) % 10] * 2, axis=1)},
        ["y_train must hold one label per image", "shape (100, 2)"]),
    "labels as text": ({"y_train": np.array([str(i % 10) for i in range(100)])}, ["y_train must hold numbers", "<U1"]),
    "images all NaN": (
        {"x_train": np.full((100, 28, 28), np.nan, "float32")},
        ["x_train holds NaN or infinite pixels", "100 of 100 images", "x_train[0] (pixel (0, 0) = nan)"]),
    "an infinite test pixel": (
        {"x_test": _float_images(30, np.inf)},
        ["x_test holds NaN or infinite pixels", "1 of 30 images", "x_test[15] (pixel (2, 3) = inf)"]),
    "every pixel the same": (
        {"x_train": np.zeros((100, 28, 28), "uint8")}, ["every pixel of every x_train image has the same value"]),
    "no image at all": (
        {k: v[:0] for k, v in arrays().items()}, ["x_train holds no image", "shape (0, 28, 28)"]),
    "test images of another size": (
        {"x_test": np.zeros((30, 32, 32), "uint8")},
        ["different shapes", "x_train of shape (100, 28, 28), x_test of shape (30, 32, 32)"]),
    "one number per image": (
        {"x_train": np.arange(100, dtype="uint8"), "x_test": np.arange(30, dtype="uint8")},
        ["one image per row", "shape (100,): one number per image"]),
    "5-D images": (
        {"x_train": arrays()["x_train"][:, None, :, :, None]}, ["one image per row", "(100, 1, 28, 28, 1)",
                                                              "5 dimensions", "squeeze()"]),
}


@pytest.mark.parametrize("case", WRONG)
def test_wrong_data_in_an_npz_is_refused_before_anything_is_written(
    case: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tuning run` on a space whose data.path holds wrong arrays: exit 2, one message, the folder unchanged."""
    overrides, says = WRONG[case]
    write_npz(workdir / "d.npz", **overrides)
    (workdir / "space.yaml").write_text(yaml.safe_dump(tiny_space(data={"dataset": "npz", "path": "d.npz"})))
    assert main(["run", "space.yaml"]) == 2
    err = capsys.readouterr().err
    for text in [*says, "Received from d.npz:", "Fix:"]:
        assert text in err, f"{text!r} not in {err!r}"
    assert "Traceback" not in err and err.count("\n") == 1  # one message, on one line
    assert sorted(p.name for p in workdir.iterdir()) == ["d.npz", "space.yaml"]  # no mlruns/, no database


@pytest.mark.parametrize("case", WRONG)
def test_wrong_arrays_from_python_are_refused_before_anything_is_written(case: str, workdir: Path) -> None:
    overrides, says = WRONG[case]
    given = {**arrays(), **overrides}
    with pytest.raises(DataError) as info:
        tuning.run(tiny_space(), data=tuple(given[k] for k in ("x_train", "y_train", "x_test", "y_test")))
    message = str(info.value)
    for text in [*says, "Received from the arrays passed as data:", "Fix:"]:
        assert text in message, f"{text!r} not in {message!r}"
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(("given", "says"), [
    ("mnist", "Received: the str 'mnist'"),  # the data set's name belongs in the space
    (np.zeros((10, 28, 28)), "Received: one NumPy array of shape (10, 28, 28)"),
    (iter([]), "Received: a builtins.list_iterator"),  # a stream, like a tf.data.Dataset
])
def test_data_that_is_not_arrays_is_refused_saying_what_it_is(given: object, says: str, workdir: Path) -> None:
    with pytest.raises(DataError) as info:
        tuning.run(tiny_space(), data=given)
    message = str(info.value)
    assert says in message and "Fix: pass NumPy arrays" in message, message
    assert list(workdir.iterdir()) == []


def test_arrays_in_keras_load_data_layout_are_checked_like_the_flat_ones(workdir: Path) -> None:
    """``((x_train, y_train), (x_test, y_test))``, as ``keras.datasets.mnist.load_data()`` returns them, is read as
    the four arrays: a negative label in it is refused with the same message as in the flat tuple."""
    a = {**arrays(), "y_test": -np.ones(30, "int64")}
    messages = []
    for given in ((a["x_train"], a["y_train"], a["x_test"], a["y_test"]),
                  ((a["x_train"], a["y_train"]), (a["x_test"], a["y_test"]))):
        with pytest.raises(DataError) as info:
            tuning.run(tiny_space(), data=given)
        messages.append(str(info.value))
    assert messages[0] == messages[1] and "y_test[0] = -1" in messages[1]
    assert list(workdir.iterdir()) == []


def test_wrong_data_in_tuning_data_dir_names_the_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = write_npz(workdir / "data" / "mnist.npz", y_test=-np.ones(30, "int64"))
    (workdir / "space.yaml").write_text(yaml.safe_dump(tiny_space()))
    assert main(["run", "space.yaml", "--data-dir", "data"]) == 2
    err = capsys.readouterr().err
    assert f"Received from {Path('data', 'mnist.npz')}: y_test[0] = -1 (30 of 30 labels are negative" in err
    assert sorted(p.name for p in workdir.iterdir()) == ["data", "space.yaml"] and file.is_file()


def test_whole_float_and_column_labels_become_class_indices() -> None:
    """Labels 3.0 (floats that are whole numbers) and labels of shape (N, 1) (CIFAR-10's) are accepted as int."""
    a = arrays()
    ds = data.from_arrays({**a, "y_train": a["y_train"].astype("float32"), "y_test": a["y_test"][:, None]})
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64 and ds.y_test.shape == (30,)
    np.testing.assert_array_equal(ds.y_test, a["y_test"])
    assert ds.num_classes == 10


def test_an_empty_test_set_is_accepted_like_test_size_0() -> None:
    a = arrays()
    ds = data.from_arrays({**a, "x_test": a["x_test"][:0], "y_test": a["y_test"][:0]})
    assert len(ds.x_test) == 0 and len(ds.x_train) == 90


def test_one_scale_for_every_split() -> None:
    """Raw 0..255 pixels are divided by 255 in every split, even a test set whose images are all faint (value 1):
    a pixel value means the same input to the model in training and in testing."""
    a = arrays()
    a["x_test"] = np.ones((30, 28, 28), "uint8")
    ds = data.from_arrays(a)
    assert float(ds.x_test.max()) == pytest.approx(1 / 255)
    assert float(np.concatenate([ds.x_train, ds.x_val]).max()) == pytest.approx(99 / 255)  # the row number 99


def test_full_mnist_passes_the_checks(mnist_dir: str | None) -> None:
    if mnist_dir is None:
        pytest.skip("needs a local mnist.npz")
    ds = data.load("mnist", path=mnist_dir)
    assert (len(ds.x_train) + len(ds.x_val), len(ds.x_test), ds.num_classes) == (60_000, 10_000, 10)
    assert ds.y_train.dtype == np.int64 and float(ds.x_train.max()) == 1.0
