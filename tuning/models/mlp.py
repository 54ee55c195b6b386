"""The ``mlp`` family: flatten, then ``depth`` dense layers of ``width[i]`` units, each followed by ``dropout[i]``.

The Keras tutorial's MLPs (784-50-10, 500 wide, 5×50 deep, dropout 0.2, 5×500) are all members of it.

Example:
    >>> from tuning.space import ModelConfig
    >>> FAMILY.check_buildable(ModelConfig(family="mlp", depth=2, width=(500, 500)), (28, 28, 1))
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tuning.config import ModelConfig
from tuning.models._family import Draw, Family
from tuning.models._layers import classifier, normalize_and_drop
from tuning.schema import ACTIVATION, BATCH_NORM, Key

if TYPE_CHECKING:
    import keras

    from tuning.config import Augmentation


class MLPFamily(Family):
    name = "mlp"
    summary = "dense layers on the flattened input"
    keys = {
        "depth": Key("int", 1, low=1, high=100, doc="hidden dense layers; sampled first"),
        "width": Key("int", 128, low=1, high=65536, per_layer=True, doc="units per hidden layer"),
        "dropout": Key("float", 0.0, low=0, high=1, high_open=True, per_layer=True,
                       doc="dropout rate after each hidden layer"),
        "activation": ACTIVATION,
        "batch_norm": BATCH_NORM,
    }

    def resolve(self, draw: Draw) -> ModelConfig:
        depth = draw("depth")
        return ModelConfig(family=self.name, depth=depth, width=draw.layers("width", depth),
                           dropout=draw.layers("dropout", depth), activation=draw("activation"),
                           batch_norm=draw("batch_norm"))

    def count_params(self, config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> int:
        fan_in, count = math.prod(input_shape), 0
        for units in config.width[: config.depth]:
            count += (fan_in + 1) * units + (4 * units if config.batch_norm else 0)
            fan_in = units
        return count + (fan_in + 1) * num_classes

    def build(
        self, config: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
        augmentation: Augmentation | None = None,
    ) -> keras.Model:
        from keras import layers

        def body(x: Any) -> Any:
            x = layers.Flatten()(x)
            for i in range(config.depth):
                # With batch norm the activation follows the normalisation, so the layer itself stays linear.
                x = layers.Dense(config.width[i], activation=None if config.batch_norm else config.activation)(x)
                rate = config.dropout[i] if config.dropout else 0.0
                x = normalize_and_drop(x, config.activation, rate, config.batch_norm)
            return x

        return classifier(input_shape, num_classes, body, name=f"mlp_{config.depth}", augmentation=augmentation)


FAMILY = MLPFamily()
