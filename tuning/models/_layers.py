"""Keras pieces the built-in families share: augmentation layers first, a softmax output last.

Example:
    >>> from tuning.models._layers import classifier
    >>> model = classifier((28, 28, 1), 10, lambda x: x, name="identity")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tuning.errors import ConfigurationError

#: Batch normalisation's moving-average momentum: PyTorch's default (0.1 there), not Keras's 0.99. With 0.99 the
#: statistics used at validation still carry most of their initial value (variance 1) after a few hundred
#: steps: a VGG-style CNN at 96% training accuracy measured 24% validation accuracy after two epochs of 12,000
#: MNIST images, and 40% after a full epoch, so pruners judged every batch-normalised trial by a wrong curve.
BN_MOMENTUM = 0.9

if TYPE_CHECKING:
    import keras

    from tuning.config import Augmentation


def classifier(
    input_shape: tuple[int, ...],
    num_classes: int,
    body: Callable[[Any], Any],
    *,
    name: str,
    augmentation: Augmentation | None = None,
) -> keras.Model:
    """``Input`` → augmentation (training only) → ``body`` → softmax over ``num_classes``."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = body(augment(inputs, augmentation, input_shape))
    # float32 output keeps the softmax stable under mixed precision.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def normalize_and_drop(x: Any, activation: str, rate: float, batch_norm: bool) -> Any:
    """Optional batch normalisation followed by ``activation``, then dropout at ``rate`` (0 = none)."""
    from keras import layers

    if batch_norm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.Activation(activation)(x)
    return layers.Dropout(rate)(x) if rate > 0 else x


def augment(x: Any, augmentation: Augmentation | None, input_shape: tuple[int, ...]) -> Any:
    """Random flips, rotations, shifts and zooms; Keras applies them only while training."""
    if augmentation is None or not augmentation.active:
        return x
    from keras import layers

    if len(input_shape) != 3:
        raise ConfigurationError(
            f"augmentation needs images of shape (height, width, channels). Received input shape {input_shape}. "
            "Fix: remove train.augmentation for flat data."
        )
    if augmentation.flip:
        x = layers.RandomFlip("horizontal")(x)
    if augmentation.rotation:
        x = layers.RandomRotation(augmentation.rotation, fill_mode="constant")(x)
    if augmentation.shift:
        x = layers.RandomTranslation(augmentation.shift, augmentation.shift, fill_mode="constant")(x)
    if augmentation.zoom:
        x = layers.RandomZoom(augmentation.zoom, fill_mode="constant")(x)
    return x
