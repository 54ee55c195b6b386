"""One trial's training: seed, build, compile, fit with a per-epoch hook, evaluate; nothing about Optuna here.

The runner passes an ``on_epoch(epoch, logs)`` hook that reports to Optuna and returns a reason to stop
(pruning). Two watchdogs stop a model that does not learn: a NaN or infinite loss (the trial fails), and a
validation accuracy still at chance level after ``train.chance_epochs`` epochs (the trial is pruned) — the 9.8%
row of the TensorFlow tutorial's table.

Example:
    >>> from tuning.space import ModelConfig, TrainConfig, TrialConfig
    >>> cfg = TrialConfig(ModelConfig("mlp", 1, (50,)), TrainConfig(epochs=1))
    >>> result = train(cfg, dataset, seed=0)  # doctest: +SKIP
    >>> result.state, result.history["val_accuracy"]  # doctest: +SKIP
    ('complete', [0.91])
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuning import records
from tuning._keras import import_keras
from tuning._precision import resolve as resolve_precision
from tuning.errors import ConfigurationError

if TYPE_CHECKING:
    import keras

    from tuning.data import Dataset
    from tuning.space import SearchSpace, TrainConfig, TrialConfig

#: ``on_epoch(epoch, logs)`` returns ``None`` to go on or a sentence saying why the trial is pruned.
EpochHook = Callable[[int, Mapping[str, float]], "str | None"]
#: A user's own model builder: takes the trial's configuration, returns a Keras model (compiled or not).
BuildFn = Callable[["TrialConfig"], "keras.Model"]
#: Trains a built model: called as ``fit_fn(model, x, y, batch_size=..., epochs=..., validation_data=...,
#: callbacks=..., verbose=0)`` (a KerasTuner ``HyperModel.fit``); returns a History, a dict of final metrics,
#: a dict of final metrics (``{"val_accuracy": 0.98}``) or anything else (ignored: the epochs were reported).
FitFn = Callable[..., Any]



@dataclass
class TrainResult:
    """What training produced. ``state`` is ``complete``, ``pruned`` or ``failed``; ``reason`` says why not complete."""

    state: str
    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs: int = 0
    train_seconds: float = 0.0
    param_count: int = 0
    reason: str | None = None
    test_accuracy: float | None = None
    precision: str = "float32"  # the Keras dtype policy it trained with (``auto`` resolved)

    def metric(self, name: str) -> float:
        """The final value of an objective metric: a Keras metric of the last epoch, ``params`` or ``train_seconds``."""
        if name == "params":
            return float(self.param_count)
        if name == "train_seconds":
            return self.train_seconds
        values = self.history.get(name)
        if not values:
            raise ConfigurationError(f"the model reported no metric {name!r}; it reported {sorted(self.history)}")
        return values[-1]


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
    ``train.early_stopping`` watches: the study's objective.

    Raises:
        ConfigurationError: the configuration cannot be built (the trial fails with this reason).
    """
    keras = import_keras()

    from tuning._epoch_watch import EpochWatch
    from tuning.models import build_model

    release_memory(clear_session=exclusive)
    seeding = _SeedingLock()
    try:
        keras.utils.set_random_seed(seed)
        precision = resolve_precision(config.train.precision)[0]
        keras.mixed_precision.set_dtype_policy(precision)
        if build_fn is not None:
            model = build_fn(config)
        else:
            model = build_model(config.model, data.input_shape, data.num_classes, config.train.augmentation)
        if not getattr(model, "compiled", False):
            steps = -(-len(data.x_train) // config.train.batch_size)
            model.compile(
                optimizer=make_optimizer(config.train, steps_per_epoch=steps),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
        watch = EpochWatch(config.train, data.chance_accuracy, on_epoch, on_train_begin=seeding.release)
        x_train, y_train, x_val, y_val = _as_tensors(data)[:4]
        if _wants_one_hot(model):
            y_train, y_val = (keras.ops.one_hot(y, data.num_classes) for y in (y_train, y_val))
        start = time.perf_counter()
        returned = (fit_fn or _fit)(
            model,
            x_train,
            y_train,
            batch_size=config.train.batch_size,
            epochs=config.train.epochs,
            validation_data=(x_val, y_val),
            callbacks=[watch, *_early_stopping(config.train, monitor), *_plateau(config.train)],
            verbose=0,
        )
    finally:
        seeding.release()  # a fit_fn that never calls on_train_begin holds it to the end
    history = watch.history or _returned_metrics(returned)
    result = TrainResult(
        state=watch.state,
        model=model,
        history=history,
        epochs=len(watch.history.get("loss", [])) or (1 if history else 0),
        train_seconds=time.perf_counter() - start,
        param_count=int(model.count_params()),
        reason=watch.reason,
        precision=precision,
    )
    if result.state == records.COMPLETE and evaluate_test:
        result.test_accuracy = test_accuracy(model, data, batch_size=config.train.batch_size)
    return result


def test_accuracy(model: keras.Model, data: Dataset, batch_size: int = 256) -> float | None:
    """The accuracy of a trained ``model`` on ``data``'s test set; None without test images or an accuracy metric.

    Evaluates in batches of at least 256 (inference needs no small batches). The runner calls it for the
    trials that lead the study (``study.test_on``), once each.

    Example:
        >>> test_accuracy(result.model, dataset)  # doctest: +SKIP
        0.9812
    """
    if not len(data.x_test):
        return None
    x_test, y_test = _as_tensors(data)[4:]
    if _wants_one_hot(model):
        y_test = import_keras().ops.one_hot(y_test, data.num_classes)
    logs = model.evaluate(x_test, y_test, batch_size=max(256, batch_size), verbose=0, return_dict=True)
    return float(logs["accuracy"]) if "accuracy" in logs else None


def _fit(model: Any, *args: Any, **kwargs: Any) -> Any:
    return model.fit(*args, **kwargs)


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


def _as_tensors(data: Dataset) -> tuple[Any, ...]:
    """The data set's six arrays as TensorFlow tensors in host memory, converted once per data set.

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


#: Every ``train.optimizer`` name and its class in ``keras.optimizers``: the one list (the schema reads it).
OPTIMIZER_CLASSES = {
    "adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop", "nadam": "Nadam", "adagrad": "Adagrad",
}
#: The optimizers that take ``train.momentum``.
_WITH_MOMENTUM = ("sgd", "rmsprop")


def make_optimizer(train: TrainConfig, steps_per_epoch: int | None = None) -> keras.optimizers.Optimizer:
    """The Keras optimizer named by ``train.optimizer`` with ``train.learning_rate`` (and ``momentum``).

    The rate is ``train.scaled_learning_rate`` (``train.lr_scaling``). ``train.schedule: cosine`` decays it to 0
    over ``train.epochs`` × ``steps_per_epoch`` steps.
    """
    from keras import optimizers

    lr: Any = train.scaled_learning_rate
    if train.schedule == "cosine" and steps_per_epoch:
        lr = optimizers.schedules.CosineDecay(lr, decay_steps=train.epochs * steps_per_epoch)
    name = train.optimizer
    if name not in OPTIMIZER_CLASSES:
        raise ConfigurationError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZER_CLASSES)}")
    options: dict[str, Any] = {"learning_rate": lr}
    if name in _WITH_MOMENTUM:
        options["momentum"] = train.momentum
    return getattr(optimizers, OPTIMIZER_CLASSES[name])(**options)


def _plateau(train: TrainConfig) -> list[Any]:
    """``train.schedule: plateau``: halve the learning rate when val_loss has not improved for 2 epochs."""
    if train.schedule != "plateau":
        return []
    import keras

    return [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2,
                                              min_lr=train.scaled_learning_rate / 64)]


def objective_monitor(space: SearchSpace) -> tuple[str, str]:
    """What ``train.early_stopping`` watches: the first objective and its direction, or ``val_loss`` when that
    objective is not a metric Keras reports each epoch (``params``, ``train_seconds``).

    Example:
        >>> from tuning.space import SearchSpace
        >>> objective_monitor(SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 1}}))
        ('val_accuracy', 'maximize')
    """
    objective = space.objectives[0]
    if objective.metric in records.MEASURED_OBJECTIVES:
        return ("val_loss", "minimize")
    return (objective.metric, objective.direction)


def _early_stopping(train: TrainConfig, monitor: tuple[str, str]) -> list[Any]:
    """Keras's EarlyStopping with ``train.early_stopping`` epochs of patience on ``monitor`` (metric, direction)."""
    if not train.early_stopping:
        return []
    import keras

    metric, direction = monitor
    mode = "max" if direction == "maximize" else "min"
    return [keras.callbacks.EarlyStopping(monitor=metric, mode=mode, patience=train.early_stopping)]


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
