"""Model builders: one Keras model per :class:`~tuning.space.ModelConfig`, for the ``mlp`` and ``cnn`` families.

- ``mlp``: flatten, then ``depth`` dense layers of ``width[i]`` units, each followed by ``dropout[i]``.
- ``cnn``: ``depth`` blocks of (conv ``width[i]`` filters × ``kernel_size[i]``, optional batch norm, max-pool),
  flatten, a dense head of ``dense_units``, ``dropout``, softmax.

Augmentation layers (rotation, shift, zoom, flip) come first; Keras applies them only while training.

Example (the TensorFlow tutorial CNN):
    >>> from tuning.space import ModelConfig
    >>> cfg = ModelConfig(family="cnn", depth=2, width=(32, 64), kernel_size=(5, 5), dense_units=1024,
    ...                   dropout=(0.5,))
    >>> check_buildable(cfg, (28, 28, 1))  # raises ConfigurationError when it cannot be built
    >>> model = build_model(cfg, (28, 28, 1), 10)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuning.errors import ConfigurationError

if TYPE_CHECKING:
    import keras

    from tuning.space import Augmentation, ModelConfig


def check_buildable(config: ModelConfig, input_shape: tuple[int, ...]) -> None:
    """Raise :class:`ConfigurationError` if ``config`` cannot be built for ``input_shape``, before any training.

    A cnn's every conv block (with ``padding: valid``) and pooling shrink the image; a configuration whose
    image shrinks below one pixel is rejected with the block where it happens.
    """
    if config.family != "cnn":
        return
    if len(input_shape) != 3:
        raise ConfigurationError(
            f"a cnn needs images of shape (height, width, channels). Received input shape {input_shape}. "
            "Fix: use family: mlp for flat vectors."
        )
    size = min(input_shape[0], input_shape[1])
    for block in range(config.depth):
        kernel = config.kernel_size[block]
        if config.padding == "valid":
            size -= kernel - 1
            if size < 1:
                raise ConfigurationError(
                    f"conv block {block + 1} (kernel {kernel}, padding valid) needs at least {kernel} pixels "
                    f"but the image is {size + kernel - 1} pixels wide there "
                    f"(depth {config.depth}, input {input_shape[0]}×{input_shape[1]})"
                )
        if config.pool_size > 1:
            if size < config.pool_size:
                raise ConfigurationError(
                    f"too many pooling blocks for {input_shape[0]}×{input_shape[1]} inputs: block {block + 1} "
                    f"pools a {size}×{size} image with pool size {config.pool_size} "
                    f"(depth {config.depth}); lower model.depth or pool_size"
                )
            size //= config.pool_size


def build_model(
    config: ModelConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    augmentation: Augmentation | None = None,
) -> keras.Model:
    """Build (not compile) the model described by ``config``; see the module docstring for the layouts."""
    import keras
    from keras import layers

    check_buildable(config, input_shape)
    inputs = keras.Input(shape=input_shape)
    x = _augment(inputs, augmentation, input_shape)
    if config.family == "mlp":
        x = layers.Flatten()(x)
        for i in range(config.depth):
            x = layers.Dense(config.width[i], activation=_activation(config, i))(x)
            x = _normalize_and_drop(x, config, config.dropout[i] if config.dropout else 0.0)
    elif config.family == "cnn":
        for i in range(config.depth):
            x = layers.Conv2D(
                config.width[i], config.kernel_size[i], padding=config.padding, activation=_activation(config, i)
            )(x)
            if config.batch_norm:
                x = layers.BatchNormalization()(x)
            if config.pool_size > 1:
                x = layers.MaxPooling2D(config.pool_size)(x)
        x = layers.Flatten()(x)
        if config.dense_units:
            x = layers.Dense(config.dense_units, activation=config.activation)(x)
        x = _normalize_and_drop(x, config, config.dropout[0] if config.dropout else 0.0, batch_norm=False)
    else:
        raise ConfigurationError(f"unknown model family {config.family!r}; use cnn or mlp")
    # float32 output keeps the softmax stable under mixed precision.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"{config.family}_{config.depth}")


def _activation(config: ModelConfig, layer: int) -> Any:
    # With batch norm the activation follows the normalisation, so the layer itself stays linear.
    return None if config.batch_norm and config.family == "mlp" else config.activation


def _normalize_and_drop(x: Any, config: ModelConfig, rate: float, batch_norm: bool | None = None) -> Any:
    from keras import layers

    if config.batch_norm if batch_norm is None else batch_norm:
        x = layers.BatchNormalization()(x)
        x = layers.Activation(config.activation)(x)
    return layers.Dropout(rate)(x) if rate > 0 else x


def _augment(x: Any, augmentation: Augmentation | None, input_shape: tuple[int, ...]) -> Any:
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
