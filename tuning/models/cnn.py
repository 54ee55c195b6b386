"""The ``cnn`` family: ``depth`` blocks of (conv ``width[i]`` filters × ``kernel_size[i]``, optional batch norm,
max-pool), flatten, a dense head of ``dense_units``, ``dropout``, softmax.

The TensorFlow tutorial CNN (32 and 64 filters 5×5, dense 1024, dropout 0.5) is ``depth: 2, width: [32, 64],
kernel_size: 5, dense_units: 1024, dropout: 0.5``.

Example:
    >>> from tuning.space import ModelConfig
    >>> cfg = ModelConfig(family="cnn", depth=2, width=(32, 64), kernel_size=(5, 5), dense_units=1024,
    ...                   dropout=(0.5,))
    >>> FAMILY.check_buildable(cfg, (28, 28, 1))  # raises ConfigurationError when it cannot be built
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuning.config import ModelConfig
from tuning.errors import ConfigurationError
from tuning.models._family import Draw, Family
from tuning.models._layers import BN_MOMENTUM, classifier, normalize_and_drop
from tuning.schema import ACTIVATION, BATCH_NORM, Key

if TYPE_CHECKING:
    import keras

    from tuning.config import Augmentation


class CNNFamily(Family):
    name = "cnn"
    summary = "conv blocks with max-pooling, a dense head"
    keys = {
        "depth": Key("int", 2, low=1, high=32, doc="conv blocks; sampled first"),
        "width": Key("int", 32, low=1, high=8192, per_layer=True, doc="filters per conv block"),
        # TensorFlow aborts the whole process on a 200×200 kernel over 28×28 inputs; 64 trains (measured).
        "kernel_size": Key("int", 3, low=1, high=64, per_layer=True, noun="kernels", doc="conv kernel size"),
        "convs_per_block": Key("int", 1, low=1, high=4, noun="conv blocks",
                               doc="conv layers in each block (same filters and kernel) before its pooling"),
        "dense_units": Key("int", 128, low=0, high=65536, noun="a dense head",
                           doc="units of the dense head; 0 = no head"),
        "dropout": Key("float", 0.0, low=0, high=1, high_open=True,
                       per_layer_hint="a cnn has one dropout (before the output layer); per-layer dropout is for "
                                      "an mlp",
                       doc="dropout rate, once before the output layer"),
        "activation": ACTIVATION,
        "batch_norm": BATCH_NORM,
        "padding": Key("str", "same", choices=("same", "valid"), noun="padding", doc="conv padding"),
        "pool_size": Key("int", 2, low=1, high=64, noun="pooling",
                         doc="max-pool size after each conv block; 1 = no pooling"),
    }

    def resolve(self, draw: Draw) -> ModelConfig:
        depth = draw("depth")
        return ModelConfig(
            family=self.name, depth=depth, width=draw.layers("width", depth),
            kernel_size=draw.layers("kernel_size", depth), convs_per_block=draw("convs_per_block"),
            dense_units=draw("dense_units"),
            dropout=(draw("dropout"),), activation=draw("activation"), batch_norm=draw("batch_norm"),
            padding=draw("padding"), pool_size=draw("pool_size"),
        )

    def check_buildable(self, config: ModelConfig, input_shape: tuple[int, ...]) -> None:
        """Every conv block (with ``padding: valid``) and pooling shrink the image: reject a configuration whose
        image shrinks below one pixel, naming the block where it happens."""
        if len(input_shape) != 3:
            raise ConfigurationError(
                f"a cnn needs images of shape (height, width, channels). Received input shape {input_shape}. "
                "Fix: use family: mlp for flat vectors."
            )
        size = min(input_shape[0], input_shape[1])
        for block in range(config.depth):
            kernel = config.kernel_size[block]
            if config.padding == "valid":
                wide, size = size, size - (kernel - 1) * config.convs_per_block
                if size < 1:
                    raise ConfigurationError(
                        f"conv block {block + 1} (kernel {kernel}, padding valid) needs at least "
                        f"{(kernel - 1) * config.convs_per_block + 1} pixels but the image is {wide} pixels wide there "
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

    def count_params(self, config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> int:
        height, width, channels = input_shape
        count = 0
        for block in range(config.depth):
            kernel, filters = config.kernel_size[block], config.width[block]
            for _ in range(config.convs_per_block):
                count += (kernel * kernel * channels + 1) * filters + (4 * filters if config.batch_norm else 0)
                channels = filters
                if config.padding == "valid":
                    height, width = height - kernel + 1, width - kernel + 1
            if config.pool_size > 1:
                height, width = height // config.pool_size, width // config.pool_size
        fan_in = max(height, 1) * max(width, 1) * channels
        if config.dense_units:
            count += (fan_in + 1) * config.dense_units
            fan_in = config.dense_units
        return count + (fan_in + 1) * num_classes

    def build(
        self, config: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
        augmentation: Augmentation | None = None,
    ) -> keras.Model:
        from keras import layers

        def body(x: Any) -> Any:
            for i in range(config.depth):
                for _ in range(config.convs_per_block):
                    x = layers.Conv2D(config.width[i], config.kernel_size[i], padding=config.padding,
                                      activation=config.activation)(x)
                    if config.batch_norm:
                        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
                if config.pool_size > 1:
                    x = layers.MaxPooling2D(config.pool_size)(x)
            x = layers.Flatten()(x)
            if config.dense_units:
                x = layers.Dense(config.dense_units, activation=config.activation)(x)
            return normalize_and_drop(x, config.activation, config.dropout[0] if config.dropout else 0.0, False)

        return classifier(input_shape, num_classes, body, name=f"cnn_{config.depth}", augmentation=augmentation)


FAMILY = CNNFamily()
