"""What training takes and gives: the hooks a caller passes, a checkpoint to continue from, the result.

Example:
    >>> TrainResult(state="complete", model=None, history={"val_accuracy": [0.9, 0.95]}).metric("val_accuracy")
    0.95
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuning.errors import ConfigurationError

if TYPE_CHECKING:
    import keras

    from tuning.config import TrialConfig

#: ``on_epoch(epoch, logs)`` returns ``None`` to go on or a sentence saying why the trial is pruned.
EpochHook = Callable[[int, Mapping[str, float]], "str | None"]
#: A user's own model builder: takes the trial's configuration, returns a Keras model (compiled or not).
BuildFn = Callable[["TrialConfig"], "keras.Model"]
#: Trains a built model: called as ``fit_fn(model, x, y, epochs=..., validation_data=..., callbacks=...,
#: verbose=0)`` (a KerasTuner ``HyperModel.fit``); ``batch_size`` is what ``model.fit`` gets unless the function
#: passes its own. Returns a History, a dict of final metrics (``{"val_accuracy": 0.98}``) or anything else
#: (ignored: the epochs were reported).
FitFn = Callable[..., Any]


@dataclass(frozen=True)
class Checkpoint:
    """A model's weights and optimizer state after ``epoch`` epochs, in a ``.weights.h5`` file, with the per-epoch
    metrics of those epochs (``history``).

    Training that starts from a checkpoint loads it into the freshly built and compiled model (optimizer state
    included: Adam's moments and the step count, so a learning-rate schedule goes on where it stopped), trains
    from epoch ``epoch + 1``, and its history continues ``history``.
    """

    path: Path
    epoch: int
    history: Mapping[str, list[float]] = field(default_factory=dict)


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
