"""Data sets: load MNIST-like arrays once per study, split off a validation set, keep the test set apart.

Where the arrays come from, in this order:

1. arrays passed from Python (``run(space, data=(x_train, y_train, x_test, y_test))``);
2. ``data.path`` in the space: an ``.npz`` file, or a folder holding ``<dataset>.npz``;
3. the folder named by the environment variable ``TUNING_DATA_DIR`` holding ``<dataset>.npz``;
4. ``keras.datasets.<dataset>.load_data()``, which downloads on machines with internet.

Every ``.npz`` has Keras's layout: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``.

Example:
    >>> import numpy as np
    >>> x = np.zeros((20, 28, 28), "uint8"); y = np.arange(20) % 10
    >>> ds = from_arrays((x, y, x[:5], y[:5]), validation_split=0.25)
    >>> ds.x_train.shape, ds.x_val.shape, ds.input_shape, ds.num_classes
    ((15, 28, 28, 1), (5, 28, 28, 1), (28, 28, 1), 10)
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuning._defaults import DATA_DIR_ENV
from tuning.errors import DataError
from tuning.schema import KERAS_DATASETS

#: How raw images become model inputs (:func:`_images`); a model trained here expects exactly this.
PREPROCESSING = (
    "float32 pixel values scaled to [0, 1] (raw uint8 pixels divided by 255), with a trailing channel axis"
)
_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class Dataset:
    """Arrays ready for Keras: images as float32 in [0, 1] with a channel axis, labels as int."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str = "arrays"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """Output units: the largest label in any split plus one (a small train_size may miss a class)."""
        return int(max(y.max() for y in (self.y_train, self.y_val, self.y_test) if len(y)) + 1)

    def input_description(self) -> dict[str, Any]:
        """What a model trained on this data set expects and returns, for the model's metadata and its users.

        Example:
            >>> x = np.zeros((20, 28, 28), "uint8"); y = np.arange(20) % 10
            >>> from_arrays((x, y, x[:5], y[:5])).input_description()["input_shape"]
            [-1, 28, 28, 1]
        """
        return {
            "dataset": self.name,
            "input_shape": [-1, *self.input_shape],
            "input_dtype": "float32",
            "preprocessing": PREPROCESSING,
            "output": f"{self.num_classes} class probabilities (softmax); the predicted label is their argmax",
            "classes": self.num_classes,
        }

    @property
    def chance_accuracy(self) -> float:
        """The validation accuracy of always predicting the most frequent class."""
        return float(np.bincount(self.y_val).max() / len(self.y_val))


def from_arrays(
    arrays: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    *,
    name: str = "arrays",
    train_size: int | None = None,
    validation_split: float = 0.1,
    test_size: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Build a :class:`Dataset` from ``(x_train, y_train, x_test, y_test)`` or a mapping with those keys.

    The training set is shuffled with ``seed``; ``train_size`` images are kept (all when ``None``) and
    ``validation_split`` of them are held out for validation. The test set is only trimmed to
    ``test_size``. See the module docstring for an example.
    """
    if isinstance(arrays, Mapping):
        missing = [k for k in _KEYS if k not in arrays]
        if missing:
            raise DataError(
                f"the data has no array {', '.join(missing)}. Received arrays: {sorted(arrays)}. "
                f"Fix: provide {', '.join(_KEYS)} (Keras's layout)."
            )
        arrays = [arrays[k] for k in _KEYS]
    if len(arrays) != 4:
        raise DataError(
            f"data must be (x_train, y_train, x_test, y_test). Received {len(arrays)} arrays. "
            "Fix: pass four arrays in that order."
        )
    x_train, y_train, x_test, y_test = (np.asarray(a) for a in arrays)
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(x) != len(y.reshape(len(y), -1)):
            raise DataError(
                f"x_{part} has {len(x)} rows but y_{part} has {len(y)}. Fix: give as many labels as images."
            )
    order = np.random.default_rng(seed).permutation(len(x_train))
    if train_size is not None:
        if train_size > len(x_train):
            raise DataError(
                f"data.train_size is larger than the training set. Received: {train_size}, "
                f"the set has {len(x_train)} images. Fix: lower train_size or remove it."
            )
        order = order[:train_size]
    n_val = max(1, round(len(order) * validation_split))
    if n_val >= len(order):
        raise DataError(
            f"the validation split leaves no training image. Received: {len(order)} images, "
            f"validation_split={validation_split}. Fix: raise train_size or lower validation_split."
        )
    val_idx, train_idx = order[:n_val], order[n_val:]
    if test_size is not None:
        x_test, y_test = x_test[:test_size], y_test[:test_size]
    return Dataset(
        x_train=_images(x_train[train_idx]),
        y_train=_labels(y_train[train_idx]),
        x_val=_images(x_train[val_idx]),
        y_val=_labels(y_train[val_idx]),
        x_test=_images(x_test),
        y_test=_labels(y_test),
        name=name,
    )


def load(
    dataset: str = "mnist",
    *,
    path: str | os.PathLike | None = None,
    train_size: int | None = None,
    validation_split: float = 0.1,
    test_size: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load a named data set from a local ``.npz`` (``path``, then ``data_dir`` or else ``$TUNING_DATA_DIR``)
    or from Keras.

    Example:
        >>> ds = load("mnist", path="../shared/datasets", train_size=500)  # doctest: +SKIP
        >>> ds.x_train.shape  # doctest: +SKIP
        (450, 28, 28, 1)

    Raises:
        DataError: the data cannot be found, read or downloaded; the message lists where it looked.
    """
    arrays = _read(dataset, path, data_dir)
    return from_arrays(
        arrays,
        name=dataset,
        train_size=train_size,
        validation_split=validation_split,
        test_size=test_size,
        seed=seed,
    )


def load_spec(spec: Any, *, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load the data described by a space's ``data`` section (a :class:`tuning.space.DataSpec`).

    ``data_dir`` is looked in instead of ``$TUNING_DATA_DIR`` (the command line's ``--data-dir``).
    """
    return load(
        spec.dataset,
        path=spec.path,
        data_dir=data_dir,
        train_size=spec.train_size,
        validation_split=spec.validation_split,
        test_size=spec.test_size,
        seed=spec.seed,
    )


def _read(
    dataset: str, path: str | os.PathLike | None, data_dir: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    looked: list[str] = []
    candidates: list[Path] = []
    if path is not None:
        p = Path(path).expanduser()
        candidates.append(p / f"{dataset}.npz" if p.is_dir() else p)
        if not candidates[-1].exists():
            raise DataError(
                f"data.path does not exist. Received: {path} (looked for {candidates[-1]}). "
                f"Fix: point data.path at an .npz file with {', '.join(_KEYS)}, or at a folder holding {dataset}.npz."
            )
    env_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if env_dir:
        candidates.append(Path(env_dir).expanduser() / f"{dataset}.npz")
    for candidate in candidates:
        looked.append(str(candidate))
        if candidate.is_file():
            return _read_npz(candidate)
    if dataset not in KERAS_DATASETS:
        raise DataError(
            f"no local file for data set {dataset!r}. Looked in: {', '.join(looked) or 'nowhere'}. "
            f"Fix: set data.path to an .npz file with {', '.join(_KEYS)}."
        )
    try:
        from tuning._keras import import_keras

        keras = import_keras()
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, dataset).load_data()
    except Exception as exc:  # no network, a broken cache, ...
        where = ", ".join(looked) if looked else f"no local copy (${DATA_DIR_ENV} is not set)"
        raise DataError(
            f"cannot load {dataset}: the Keras download failed ({type(exc).__name__}: {exc}). "
            f"Looked locally in: {where}. Fix: put {dataset}.npz (Keras's layout) in a folder and set "
            f"{DATA_DIR_ENV}=<folder>, or set data.path, or pass --data-dir."
        ) from exc
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(file):
        raise DataError(
            f"cannot read {file} as an .npz file: it is not a zip archive. "
            "Fix: check the file is a NumPy .npz archive (numpy.savez)."
        )
    try:
        with np.load(file, allow_pickle=False) as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise DataError(
                    f"{file} has no array {', '.join(missing)}. Received arrays: {npz.files}. "
                    f"Fix: save the file with {', '.join(_KEYS)} (Keras's layout)."
                )
            return {k: npz[k] for k in _KEYS}
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise DataError(f"cannot read {file} as an .npz file ({exc}). Fix: save it with numpy.savez.") from exc
        raise DataError(
            f"{file} holds Python objects, not plain arrays; they are never unpickled (a file could run code). "
            "Fix: save numeric arrays with numpy.savez."
        ) from exc
    except Exception as exc:
        raise DataError(
            f"cannot read {file} as an .npz file ({type(exc).__name__}: {exc}). "
            "Fix: check the file is a NumPy .npz archive (numpy.savez)."
        ) from exc


def _images(x: np.ndarray) -> np.ndarray:
    x = x.astype("float32")
    if x.size and x.max() > 1.0:
        x /= 255.0
    return x[..., None] if x.ndim == 3 else x


def _labels(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y)).astype("int64")
