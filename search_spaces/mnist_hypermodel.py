"""A KerasTuner hypermodel, unchanged: the same file runs under KerasTuner (`keras_tuner.Hyperband(build_model,
...)`) and under this toolkit (`tuning run search_spaces/mnist_hypermodel.yaml`), where Optuna draws every `hp`.

A CNN whose number of conv blocks is searched (a filters value per block that exists), an optional dense head
whose width is searched only when the head is on, and a log-sampled learning rate.
"""

import keras
from keras import layers


def build_model(hp):
    inputs = keras.Input(shape=(28, 28, 1))
    x = inputs
    for i in range(hp.Int("conv_blocks", 1, 3)):
        x = layers.Conv2D(hp.Choice(f"filters_{i}", [16, 32, 64]), hp.Choice("kernel_size", [3, 5]),
                          padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    if hp.Boolean("dense_head"):
        with hp.conditional_scope("dense_head", [True]):
            x = layers.Dense(hp.Int("dense_units", 64, 512, step=64), activation="relu")(x)
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.1))(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
