"""One model's training: seed, build, compile, fit with a per-epoch hook, evaluate; nothing about Optuna here.

The caller passes an ``on_epoch(epoch, logs)`` hook that reports to Optuna and returns a reason to stop
(pruning). Two watchdogs stop a model that does not learn: a NaN or infinite loss (the trial fails), and a
validation accuracy still at chance level after ``train.chance_epochs`` epochs (the trial is pruned) — the 9.8%
row of the TensorFlow tutorial's table. Training may continue from a :class:`Checkpoint` (weights and optimizer
state) and leave one behind.

Example:
    >>> from tuning.config import ModelConfig, TrainConfig, TrialConfig
    >>> cfg = TrialConfig(ModelConfig("mlp", 1, (50,)), TrainConfig(epochs=1))
    >>> result = train(cfg, dataset, seed=0)  # doctest: +SKIP
    >>> result.state, result.history["val_accuracy"]  # doctest: +SKIP
    ('complete', [0.91])
"""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuning import records
from tuning._keras import import_keras
from tuning.errors import ConfigurationError
from tuning.training._optimizer import make_optimizer, stopping_callbacks
from tuning.training._precision import resolve as resolve_precision
from tuning.training._types import BuildFn, Checkpoint, EpochHook, FitFn, TrainResult

if TYPE_CHECKING:
    import keras

    from tuning.config import TrialConfig
    from tuning.data import Dataset


def release_memory(clear_session: bool = True) -> None:
    """Drop the previous trial's graph and tensors so memory stays flat over long studies (as KerasTuner does).

    ``clear_session`` resets Keras's global state, which would break models that other threads are training:
    with ``n_jobs > 1`` only garbage is collected.
    """
    keras = import_keras()

    if clear_session:
        _forget_custom_gradients()
        keras.backend.clear_session()  # collects garbage itself (free_memory=True): no second gc.collect()
    else:
        gc.collect()


_GRADIENTS_AT_START: set[str] | None = None


def _forget_custom_gradients() -> None:
    """Drop the custom gradients that earlier trials' training steps registered in TensorFlow's global registry.

    Every traced ``tf.custom_gradient`` (two per Keras ``fit`` here) is registered under a new
    ``CustomGradient-N`` name and never removed; its closure keeps that trial's whole train-step graph alive,
    so memory grew by about 4.5 MB a trial even after ``clear_session()`` (keras-team/keras#20552,
    tensorflow/tensorflow#61791). Between trials no graph is being traced, so the entries are dead weight.
    Only the ones added since the first trial are dropped; nothing happens if TensorFlow's internals moved.
    """
    global _GRADIENTS_AT_START
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError):
        return
    if _GRADIENTS_AT_START is None:
        _GRADIENTS_AT_START = set(registry)
        return
    for name in [k for k in registry if k.startswith("CustomGradient-") and k not in _GRADIENTS_AT_START]:
        del registry[name]


def train(
    config: TrialConfig,
    data: Dataset,
    *,
    seed: int,
    on_epoch: EpochHook | None = None,
    build_fn: BuildFn | None = None,
    fit_fn: FitFn | None = None,
    start: Checkpoint | None = None,
    stop_at: int | None = None,
    save_to: Path | None = None,
    callbacks: Sequence[Any] = (),
    evaluate_test: bool = True,
    exclusive: bool = True,
    monitor: tuple[str, str] = ("val_loss", "minimize"),
) -> TrainResult:
    """Build and train one configuration on ``data``; see the module docstring.

    A model compiled by ``build_fn`` keeps its own optimizer and loss; an uncompiled one is compiled from
    ``config.train``. A model compiled with ``categorical_crossentropy`` (as KerasTuner's ``HyperXception`` and
    ``HyperResNet`` are) gets one-hot labels.

    ``seed`` alone decides the initial weights, dropout masks and batch order, also while other threads train
    (``exclusive=False``): seeding, building and the start of ``fit`` (where Keras draws its shuffling seed)
    take one process-wide lock, held until the first epoch begins. ``monitor`` is the metric and direction
    ``train.early_stopping`` watches: the study's objective. ``start`` continues from a checkpoint (from its
    epoch); training stops at epoch ``stop_at`` (default ``config.train.epochs``, which is always the length of
    the learning-rate schedule); ``save_to`` writes the trained weights and optimizer state there;
    ``callbacks`` are added to the toolkit's own.

    Raises:
        ConfigurationError: the configuration cannot be built, or ``build_fn`` returned no Keras model (the
            trial fails with this reason).
    """
    keras = import_keras()

    from tuning.models import build_model
    from tuning.training._watch import EpochWatch

    release_memory(clear_session=exclusive)
    seeding = _SeedingLock()
    try:
        keras.utils.set_random_seed(seed)
        precision = resolve_precision(config.train.precision)[0]
        keras.mixed_precision.set_dtype_policy(precision)
        if build_fn is not None:
            model = _checked_model(build_fn(config))
        else:
            model = build_model(config.model, data.input_shape, data.num_classes, config.train.augmentation)
        steps = -(-len(data.x_train) // config.train.batch_size)
        if not getattr(model, "compiled", False):
            model.compile(optimizer=make_optimizer(config.train, steps_per_epoch=steps),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        if start is not None:
            _restore(model, start)
        watch = EpochWatch(config.train, data.chance_accuracy, on_epoch, on_train_begin=seeding.release)
        x_train, y_train, x_val, y_val = as_tensors(data)[:4]
        if _wants_one_hot(model):
            y_train, y_val = (keras.ops.one_hot(y, data.num_classes) for y in (y_train, y_val))
        kwargs: dict[str, Any] = {
            "epochs": stop_at or config.train.epochs,
            "validation_data": (x_val, y_val),
            "callbacks": [watch, *stopping_callbacks(config.train, monitor), *callbacks],
            "verbose": 0,
        }
        if start is not None:
            kwargs["initial_epoch"] = start.epoch
        started = time.perf_counter()
        returned = _fit_with_default_batch(model, fit_fn, x_train, y_train, config.train.batch_size, kwargs)
    finally:
        seeding.release()  # a fit_fn that never calls on_train_begin holds it to the end
    history = watch.history or _returned_metrics(returned)
    if start is not None and start.history:  # the curve from epoch 1, as if the trial had never stopped
        history = {k: [*start.history.get(k, []), *v] for k, v in history.items()}
    result = TrainResult(
        state=watch.state,
        model=model,
        history=history,
        epochs=len(watch.history.get("loss", [])) or (1 if history else 0),
        train_seconds=time.perf_counter() - started,
        param_count=int(model.count_params()),
        reason=watch.reason,
        precision=precision,
    )
    if save_to is not None:
        _save_atomically(model, save_to)
    if result.state == records.COMPLETE and evaluate_test:
        result.test_accuracy = test_accuracy(model, data, batch_size=config.train.batch_size)
    return result


def _save_atomically(model: keras.Model, path: Path) -> None:
    """Write the model's weights and optimizer state to ``path``; a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.weights.h5")
    model.save_weights(partial)
    os.replace(partial, path)


def _checked_model(model: Any) -> keras.Model:
    """``model`` if it is a Keras model; a clear :class:`ConfigurationError` otherwise (``build`` returned 42)."""
    keras = import_keras()
    if not isinstance(model, keras.Model):
        raise ConfigurationError(
            f"the model builder returned {type(model).__name__} {_short(model)}, not a Keras model: build(hp) "
            "(or build_fn) must return a keras.Model"
        )
    return model


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _restore(model: keras.Model, start: Checkpoint) -> None:
    """Load a checkpoint's weights and optimizer state into a compiled model (the optimizer built first, so that
    its moments and step count are loaded instead of skipped)."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(start.path)


def _fit_with_default_batch(model: Any, fit_fn: FitFn | None, x: Any, y: Any, batch_size: int,
                            kwargs: dict[str, Any]) -> Any:
    """Call ``fit_fn`` (or ``model.fit``) with ``batch_size`` as the default of ``model.fit``.

    A KerasTuner ``HyperModel.fit`` that tunes the batch size passes its own (``model.fit(*args,
    batch_size=hp.Choice(...), **kwargs)``, the keras.io pattern): that one wins, as under KerasTuner, where
    ``search()`` passes no batch size. A ``fit`` that passes none trains with ``train.batch_size``.
    """
    if fit_fn is None:
        return model.fit(x, y, batch_size=batch_size, **kwargs)
    fit = model.fit

    def fit_with_default(*args: Any, **given: Any) -> Any:
        given.setdefault("batch_size", batch_size)
        return fit(*args, **given)

    model.fit = fit_with_default
    try:
        return fit_fn(model, x, y, **kwargs)
    finally:
        del model.fit  # the instance attribute: model.fit is the class's method again


def test_accuracy(model: keras.Model, data: Dataset, batch_size: int = 256) -> float | None:
    """The accuracy of a trained ``model`` on ``data``'s test set; None without test images or an accuracy metric.

    Evaluates in batches of at least 256 (inference needs no small batches). The study calls it for the
    trials that lead it (``study.test_on``), once each.

    Example:
        >>> test_accuracy(result.model, dataset)  # doctest: +SKIP
        0.9812
    """
    if not len(data.x_test):
        return None
    x_test, y_test = as_tensors(data)[4:]
    if _wants_one_hot(model):
        y_test = import_keras().ops.one_hot(y_test, data.num_classes)
    logs = model.evaluate(x_test, y_test, batch_size=max(256, batch_size), verbose=0, return_dict=True)
    return float(logs["accuracy"]) if "accuracy" in logs else None


def _wants_one_hot(model: Any) -> bool:
    """Whether ``model`` was compiled with a categorical (one-hot) cross-entropy instead of the sparse one."""
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else getattr(loss, "name", None) or getattr(loss, "__name__", "")
    return name == "categorical_crossentropy"


def _returned_metrics(returned: Any) -> dict[str, list[float]]:
    """Final metrics a custom ``HyperModel.fit`` returned as a dict without training through Keras's epochs."""
    if isinstance(returned, Mapping):
        return {str(k): [float(v)] for k, v in returned.items() if isinstance(v, int | float)}
    return {}


#: ``id(dataset)`` → its six arrays as tensors; an entry lives as long as its dataset.
_TENSORS: dict[int, tuple[Any, ...]] = {}


def as_tensors(data: Dataset) -> tuple[Any, ...]:
    """The data set's six arrays as TensorFlow tensors in host memory, converted once per data set and kept as
    long as the data set lives: ``(x_train, y_train, x_val, y_val, x_test, y_test)``.

    Example:
        >>> x_train, y_train, x_val, y_val, x_test, y_test = as_tensors(dataset)  # doctest: +SKIP

    Given NumPy arrays, Keras converts the whole training, validation and test arrays to tensors again at
    every ``fit`` and ``evaluate``: about 50 ms a trial on 10,000 MNIST images here (3% of a 1.6-s trial).
    A study trains every trial on the same data set, so it is converted at its first trial. Keras then
    shuffles and batches exactly as it does for NumPy arrays (the same ``ArrayDataAdapter``). Costs one extra
    copy of the data set while it is alive. Other Keras backends get the arrays unchanged.
    """
    arrays = (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test)
    if import_keras().backend.backend() != "tensorflow":
        return arrays
    key = id(data)
    tensors = _TENSORS.get(key)
    if tensors is None:
        import tensorflow as tf

        with tf.device("/CPU:0"):  # a GPU takes batches as with NumPy input; the data set stays in host memory
            tensors = tuple(tf.convert_to_tensor(a) for a in arrays)
        _TENSORS[key] = tensors
        weakref.finalize(data, _TENSORS.pop, key, None)
    return tensors


#: Held from seeding a trial until its first epoch begins: Keras's seed is global to the process.
_SEEDING = threading.Lock()


class _SeedingLock:
    """Takes :data:`_SEEDING` when created; :meth:`release` gives it back once (later calls do nothing)."""

    def __init__(self) -> None:
        _SEEDING.acquire()
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            _SEEDING.release()
