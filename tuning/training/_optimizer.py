"""How a model learns: the optimizer and learning-rate schedule of ``train``, and the callbacks that stop early.

Example:
    >>> from tuning.config import TrainConfig
    >>> make_optimizer(TrainConfig(epochs=2, learning_rate=0.01), steps_per_epoch=10).name  # doctest: +SKIP
    'adam'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuning.errors import ConfigurationError
from tuning.schema import OPTIMIZER_CLASSES

if TYPE_CHECKING:
    import keras

    from tuning.config import TrainConfig

#: The optimizers that take ``train.momentum``.
_WITH_MOMENTUM = ("sgd", "rmsprop")


def make_optimizer(train: TrainConfig, steps_per_epoch: int | None = None) -> keras.optimizers.Optimizer:
    """The Keras optimizer named by ``train.optimizer`` with ``train.learning_rate`` (and ``momentum``).

    The rate is ``train.scaled_learning_rate`` (``train.lr_scaling``). ``train.schedule: cosine`` decays it to 0
    over ``train.epochs`` × ``steps_per_epoch`` steps.

    Raises:
        ConfigurationError: an optimizer name that Keras does not have.
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


def stopping_callbacks(train: TrainConfig, monitor: tuple[str, str]) -> list[Any]:
    """The Keras callbacks ``train`` asks for: early stopping on ``monitor`` (metric, direction) after
    ``train.early_stopping`` epochs without improvement, and ``train.schedule: plateau`` (halve the rate when
    ``val_loss`` has not improved for 2 epochs).

    Example:
        >>> from tuning.config import TrainConfig
        >>> stopping_callbacks(TrainConfig(epochs=3), ("val_accuracy", "maximize"))
        []
    """
    callbacks: list[Any] = []
    if train.early_stopping:
        import keras

        metric, direction = monitor
        mode = "max" if direction == "maximize" else "min"
        callbacks.append(keras.callbacks.EarlyStopping(monitor=metric, mode=mode, patience=train.early_stopping))
    if train.schedule == "plateau":
        import keras

        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2,
                                                           min_lr=train.scaled_learning_rate / 64))
    return callbacks
