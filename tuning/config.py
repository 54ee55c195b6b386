"""The configuration of one trial: every value fixed, per-layer values expanded to one per layer.

A :class:`~tuning.space.SearchSpace` turns an Optuna trial into a :class:`TrialConfig` (``space.suggest(trial)``)
or a plain dict of parameters into one (``space.config_from_params(params)``); the model builders and the
training loop read only this object, never the YAML. This module imports nothing of the package.

Example:
    >>> cfg = ModelConfig(family="mlp", depth=2, width=(500, 500), dropout=(0.2, 0.2))
    >>> cfg.width[1]
    500
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """One model's architecture.

    ``width``, ``kernel_size`` and ``dropout`` hold one value per layer (``len == depth``); for a ``cnn``
    ``dropout`` has a single value, applied before the output layer (after the dense head).
    """

    family: str  # "cnn" | "mlp"
    depth: int
    width: tuple[int, ...]
    dropout: tuple[float, ...] = ()
    activation: str = "relu"
    kernel_size: tuple[int, ...] = ()  # cnn only
    dense_units: int | None = None  # cnn only: units of the dense head; None or 0 means no head
    padding: str = "same"  # cnn only
    pool_size: int = 2  # cnn only: max-pool after every conv block; 1 means no pooling
    batch_norm: bool = False
    convs_per_block: int = 1  # cnn only: conv layers in each block, before its pooling


@dataclass(frozen=True)
class Augmentation:
    """Random input transformations applied while training (Keras preprocessing layers); 0 turns one off."""

    rotation: float = 0.0  # fraction of a full turn, as keras.layers.RandomRotation
    shift: float = 0.0  # fraction of height and width, as keras.layers.RandomTranslation
    zoom: float = 0.0  # fraction, as keras.layers.RandomZoom
    flip: bool = False  # horizontal flips (not for digits)

    @property
    def active(self) -> bool:
        return bool(self.rotation or self.shift or self.zoom or self.flip)


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained."""

    epochs: int
    batch_size: int = 128
    optimizer: str = "adam"  # adam | adamw | sgd | rmsprop | nadam | adagrad
    learning_rate: float = 1e-3
    momentum: float = 0.0  # sgd and rmsprop only
    schedule: str = "cosine"  # cosine | constant | plateau: how the learning rate changes over the epochs
    lr_scaling: str = "none"  # none | linear | sqrt: learning_rate scaled by batch_size / lr_reference_batch
    lr_reference_batch: int = 128
    augmentation: Augmentation = field(default_factory=Augmentation)
    precision: str = "auto"  # auto | float32 | mixed_bfloat16 | mixed_float16 (auto: see tuning.training)
    chance_epochs: int = 2  # stop a trial still at chance accuracy after this many epochs; 0 never
    early_stopping: int = 0  # patience in epochs on the objective metric; 0 never

    @property
    def scaled_learning_rate(self) -> float:
        """The learning rate this trial trains at: ``learning_rate`` scaled to its batch size by ``lr_scaling``.

        Example:
            >>> TrainConfig(epochs=1, batch_size=512, learning_rate=1e-3, lr_scaling="linear").scaled_learning_rate
            0.004
            >>> TrainConfig(epochs=1, batch_size=512, learning_rate=1e-3, lr_scaling="sqrt").scaled_learning_rate
            0.002
        """
        ratio = self.batch_size / self.lr_reference_batch
        factor = {"linear": ratio, "sqrt": math.sqrt(ratio)}.get(self.lr_scaling, 1.0)
        return self.learning_rate * factor


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial trains: its model, its training, and the Optuna parameters it came from."""

    model: ModelConfig
    train: TrainConfig
    params: dict[str, Any] = field(default_factory=dict)  # the trial's active parameters, by key path
