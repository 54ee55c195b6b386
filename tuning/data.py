"""Data sets: load MNIST-like arrays once per study, split off a validation set, keep the test set apart.

Where the arrays come from, in this order:

1. arrays passed from Python (``run(space, data=(x_train, y_train, x_test, y_test))``, or as
   ``keras.datasets.mnist.load_data()`` returns them);
2. ``data.path`` in the space: an ``.npz`` file, or a folder holding ``<dataset>.npz``;
3. the folder named by the environment variable ``TUNING_DATA_DIR`` holding ``<dataset>.npz``;
4. ``keras.datasets.<dataset>.load_data()``, which downloads on machines with internet.

Every ``.npz`` has Keras's layout: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``.

Whichever way they come, the arrays are checked before anything is trained or written, and a mistake is a
:class:`tuning.errors.DataError` naming the array, the first offending value or the shape, and the fix:

- images: numbers, one image per row: ``(N, height, width)``, ``(N, height, width, channels)`` or flat
  ``(N, features)``; the same image shape in ``x_train`` and ``x_test``; at least one training image; no NaN or
  infinite pixel; not every training pixel the same value;
- labels: one class index per image, shape ``(N,)`` or ``(N, 1)`` (one-hot rows are refused with the fix);
  integers, or floats that are whole numbers (``3.0`` becomes ``3``; ``3.7`` is refused); never negative;
  the classes numbered ``0..K-1`` across ``y_train`` and ``y_test`` together, each number used (the model gets
  one output unit per number up to the largest label); at least two classes in ``y_train``, and at least two
  training images per class on average (fewer means the labels are row numbers or IDs).

These checks read each array once or twice (``min``/``max``, ``unique`` of the labels): tens of milliseconds on
full MNIST.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype="uint8"); y = np.arange(20) % 10
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
            >>> x = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype="uint8"); y = np.arange(20) % 10
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
    source: str = "the arrays passed as data",
) -> Dataset:
    """Build a :class:`Dataset` from ``(x_train, y_train, x_test, y_test)``, Keras's ``((x_train, y_train),
    (x_test, y_test))`` (what ``keras.datasets.mnist.load_data()`` returns) or a mapping with those keys.

    The arrays are checked first (see the module docstring); ``source`` names them in the messages. The
    training set is shuffled with ``seed``; ``train_size`` images are kept (all when ``None``) and
    ``validation_split`` of them are held out for validation. The test set is only trimmed to ``test_size``.

    Example:
        >>> x = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype="uint8")
        >>> from_arrays((x, np.arange(20) % 10 - 1, x[:5], np.arange(5)))
        Traceback (most recent call last):
        tuning.errors.DataError: y_train holds negative labels: ... y_train[0] = -1 (2 of 20 labels are negative, ...

    Raises:
        DataError: an array is missing, has the wrong shape or type, or holds values no model can learn from.
    """
    arrays = _four(arrays)
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
    x_train, y_train, x_test, y_test, scale = _checked(arrays, source)
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
        x_train=_images(x_train[train_idx], scale),
        y_train=y_train[train_idx],
        x_val=_images(x_train[val_idx], scale),
        y_val=y_train[val_idx],
        x_test=_images(x_test, scale),
        y_test=y_test,
        name=name,
    )


def _four(arrays: Any) -> Sequence[Any] | Mapping[str, Any]:
    """``arrays`` as given, or Keras's ``((x_train, y_train), (x_test, y_test))`` (what ``load_data()`` returns)
    as four; anything that is not a sequence or mapping of arrays is refused, saying what it is."""
    if isinstance(arrays, Mapping):
        return arrays
    if _is_sequence(arrays):
        keras_pairs = len(arrays) == 2 and all(_is_sequence(p) and len(p) == 2 for p in arrays)
        return [*arrays[0], *arrays[1]] if keras_pairs else arrays
    if isinstance(arrays, np.ndarray):
        what = f"one NumPy array of shape {arrays.shape}"
    elif isinstance(arrays, str | bytes):
        what = f"the {type(arrays).__name__} {arrays[:60]!r}"
    else:
        what = f"a {type(arrays).__module__}.{type(arrays).__qualname__}"
    raise DataError(
        f"data must be four arrays (x_train, y_train, x_test, y_test) or a mapping with those keys. Received: "
        f"{what}. Fix: pass NumPy arrays, e.g. keras.datasets.mnist.load_data() as it returns them "
        "(a tf.data.Dataset is not read), or leave data out and name the data set in the space's data section."
    )


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


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
    arrays, source = _read(dataset, path, data_dir)
    return from_arrays(
        arrays,
        name=dataset,
        source=source,
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
) -> tuple[dict[str, np.ndarray], str]:
    """The four arrays and where they come from (a file, or Keras's download), for the messages."""
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
            return _read_npz(candidate), str(candidate)
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
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}, f"keras.datasets.{dataset}"


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


#: How to number classes 0..K-1 the same way in both sets, quoted in the messages.
_RENUMBER = (
    "classes = np.unique(np.concatenate([y_train, y_test])); "
    "y_train, y_test = np.searchsorted(classes, y_train), np.searchsorted(classes, y_test)"
)


def _refuse(problem: str, received: str, source: str, fix: str) -> DataError:
    return DataError(f"{problem}. Received from {source}: {received}. Fix: {fix}.")


def _checked(
    arrays: Sequence[Any], source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """The four arrays checked (the module docstring lists the checks), the labels as 1-D int64, and whether the
    pixels are scaled by 1/255 (any pixel above 1 in ``x_train`` or ``x_test``: one decision for every split)."""
    x_train, y_train, x_test, y_test = (_numeric(a, key, source) for a, key in zip(arrays, _KEYS, strict=True))
    if x_train.ndim == 0 or not len(x_train):
        raise _refuse(
            "x_train holds no image", f"an array of shape {x_train.shape}", source,
            "save the training images in x_train (check the file was written after the arrays were filled)",
        )
    _check_image_shape(x_train, "x_train", source)
    if x_test.ndim == 0 or len(x_test):  # an empty test set is allowed (like data.test_size: 0)
        _check_image_shape(x_test, "x_test", source)
        if _image_shape(x_test) != _image_shape(x_train):
            raise _refuse(
                "x_train and x_test hold images of different shapes: a model trained on one cannot read the other",
                f"x_train of shape {x_train.shape}, x_test of shape {x_test.shape}", source,
                "resize or crop one set to the other's image shape",
            )
    y_train, y_test = (_label_column(y, x, part, source) for y, x, part in
                       ((y_train, x_train, "train"), (y_test, x_test, "test")))
    _check_classes(y_train, y_test, source)
    high = max(_pixel_range(x_train, "x_train", source, constant_refused=True),
               _pixel_range(x_test, "x_test", source, constant_refused=False))
    return x_train, y_train.astype("int64"), x_test, y_test.astype("int64"), high > 1.0


def _numeric(array: Any, key: str, source: str) -> np.ndarray:
    try:
        a = np.asarray(array)
    except ValueError as exc:  # rows of different lengths
        raise _refuse(f"{key} is not a rectangular array", f"a {type(array).__name__} whose rows differ in shape",
                      source, "give every image the same shape, as one NumPy array") from exc
    if a.dtype.kind not in "biuf":
        cast = "float32" if key.startswith("x") else "int64"
        raise _refuse(f"{key} must hold numbers", f"an array of dtype {a.dtype}", source,
                      f"convert it, e.g. {key}.astype({cast!r})")
    return a


def _image_shape(x: np.ndarray) -> tuple[int, ...]:
    """One image's shape as the model sees it: ``(h, w)`` gets its channel axis ``(h, w, 1)``."""
    return (*x.shape[1:], 1) if x.ndim == 3 else tuple(x.shape[1:])


def _check_image_shape(x: np.ndarray, key: str, source: str) -> None:
    if x.ndim in (2, 3, 4) and x[0].size:
        return
    if x.ndim in (2, 3, 4):
        got, fix = f"images of shape {x.shape[1:]}, which hold no pixel", "save the images themselves"
    elif x.ndim == 0:
        got, fix = "a single number, not an array of images", f"save the images themselves in {key}"
    elif x.ndim == 1:
        got = f"an array of shape {x.shape}: one number per image, not an image"
        fix = f"save whole images, e.g. {key}.reshape(len({key}), 28, 28) if they were flattened row by row"
    else:
        got = f"an array of shape {x.shape} ({x.ndim} dimensions)"
        fix = f"drop the extra axes ({key}.squeeze() drops those of length 1) to get (images, height, width, channels)"
    raise _refuse(
        f"{key} must hold one image per row: (images, height, width), (images, height, width, channels) or "
        "(images, features)", got, source, fix,
    )


def _label_column(y: np.ndarray, x: np.ndarray, part: str, source: str) -> np.ndarray:
    """``y_<part>`` as one label per image (1-D, its own dtype), checked: as many as images, whole, not negative."""
    key = f"y_{part}"
    if y.ndim == 0 or len(y) != len(x):
        rows = "a single number" if y.ndim == 0 else len(y)
        raise DataError(f"x_{part} has {len(x)} rows but {key} has {rows}. Fix: give as many labels as images.")
    if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
        one_hot = y.ndim == 2 and bool(np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all())
        raise _refuse(
            f"{key} {'is one-hot encoded' if one_hot else 'must hold one label per image'}: the toolkit takes one "
            "class index 0..K-1 per image, shape (images,)",
            f"an array of shape {y.shape}" + (" whose rows each hold a single 1" if one_hot else ""), source,
            f"pass {key}.argmax(axis=1) (and the same for the other set)" if one_hot else
            "keep one column: the class index of each image",
        )
    y = y.reshape(len(y))
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if bad.size:
            i = int(bad[0])
            raise _refuse(
                f"{key} holds labels that are not whole numbers: a label is a class index 0..K-1",
                f"{key}[{i}] = {y[i]:g} ({bad.size:,} of {len(y):,} labels are fractional, NaN or infinite)", source,
                "give each image the integer index of its class; whole numbers stored as floats (3.0) are accepted",
            )
    negative = np.flatnonzero(y < 0)
    if negative.size:
        i = int(negative[0])
        raise _refuse(
            f"{key} holds negative labels: a label is a class index 0..K-1",
            f"{key}[{i}] = {y[i]:g} ({negative.size:,} of {len(y):,} labels are negative, the smallest "
            f"{y.min():g})", source,
            f"number the classes from 0 in both sets: {_RENUMBER} (if -1 marks unlabelled images, drop them first)",
        )
    return y


def _check_classes(y_train: np.ndarray, y_test: np.ndarray, source: str) -> None:
    """The labels number the classes 0..K-1, each number used; ``y_train`` has two classes or more, and at least
    two images per class on average."""
    labels = np.unique(np.concatenate([y_train, y_test]))  # sorted, whole, not negative (checked above)
    k, top = len(labels), int(labels[-1])
    if top + 1 != k:
        missing = int(np.argmax(labels != np.arange(k)))  # the first number no label uses
        raise _refuse(
            "the labels must number the classes 0..K-1, each number used: the model gets one output unit per "
            "number from 0 to the largest label",
            f"{k:,} distinct labels in y_train and y_test, from {int(labels[0])} to {top}: {top + 1 - k:,} numbers "
            f"in between are never used (the first is {missing}), so the model would have {top + 1:,} output "
            f"units for {k:,} classes", source,
            f"renumber them 0..{k - 1} the same way in both sets: {_RENUMBER}",
        )
    counts = np.bincount(y_train.astype("int64"), minlength=k)
    present = int(np.count_nonzero(counts))
    if present < 2:
        raise _refuse(
            "y_train holds a single class: there is nothing to learn",
            f"all {len(y_train):,} labels are {int(np.flatnonzero(counts)[0])}",
            source, "give training images of two classes or more",
        )
    if present * 2 > len(y_train):
        raise _refuse(
            "y_train looks like row numbers or IDs, not classes: a classifier needs several images of each class",
            f"{present:,} distinct labels for {len(y_train):,} images (fewer than 2 images per class on average)",
            source, "give each image the index 0..K-1 of its class (e.g. the digit it shows)",
        )


def _pixel_range(x: np.ndarray, key: str, source: str, *, constant_refused: bool) -> float:
    """The largest pixel of ``x`` (0 when empty), after refusing NaN and infinite pixels, and, when
    ``constant_refused``, images whose every pixel has the same value."""
    if not x.size:
        return 0.0
    low, high = float(x.min()), float(x.max())  # NaN propagates: one pass each finds any non-finite pixel
    if not (np.isfinite(low) and np.isfinite(high)):
        flat = x.reshape(len(x), -1)
        bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
        i = int(bad[0])
        j = int(np.flatnonzero(~np.isfinite(flat[i]))[0])
        where = np.unravel_index(j, x.shape[1:])
        raise _refuse(
            f"{key} holds NaN or infinite pixels: a network cannot learn from them",
            f"{bad.size:,} of {len(x):,} images have such pixels, the first {key}[{i}] "
            f"(pixel {tuple(int(w) for w in where)} = {flat[i, j]})", source,
            f"replace them (np.nan_to_num({key})) or drop those images with their labels",
        )
    if constant_refused and low == high:
        raise _refuse(
            f"every pixel of every {key} image has the same value: there is nothing to learn from",
            f"{key} of shape {x.shape}, all {low:g}", source,
            "check the images were saved, not an array still filled with zeros",
        )
    return high


def _images(x: np.ndarray, scale: bool) -> np.ndarray:
    x = x.astype("float32")
    if scale:
        x /= 255.0
    return x[..., None] if x.ndim == 3 else x
