"""The Keras callback behind :func:`tuning.training.train`: records each epoch and stops training that diverged,
sits at chance level, or is pruned (imports Keras, so it is loaded only when training)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import keras

from tuning.records import COMPLETE, FAILED, PRUNED

if TYPE_CHECKING:
    from tuning.config import TrainConfig
    from tuning.training._types import EpochHook

CHANCE_MARGIN = 0.02  # accuracy within this of the majority-class rate counts as chance level


class EpochWatch(keras.callbacks.Callback):
    """Records each epoch's metrics and stops training that diverged, sits at chance level, or is pruned."""

    def __init__(
        self,
        train: TrainConfig,
        chance: float,
        on_epoch: EpochHook | None,
        on_train_begin: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._on_train_begin = on_train_begin
        self.train_config = train
        self.chance = chance
        self.on_epoch = on_epoch
        self.history: dict[str, list[float]] = {}
        self.state = COMPLETE
        self.reason: str | None = None
        self._started = 0.0

    def on_train_begin(self, logs: Any = None) -> None:
        """Keras has drawn its seeds (weights, dropout, shuffling) by now: ``on_train_begin`` is called."""
        if self._on_train_begin is not None:
            self._on_train_begin()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs["epoch_seconds"] = time.perf_counter() - self._started
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        number = epoch + 1
        loss = logs.get("loss", 0.0)
        if not math.isfinite(loss):
            self._stop(FAILED, f"the loss became {loss} at epoch {number}: the model diverged "
                                 "(a lower learning rate usually helps)")
            return
        accuracy = logs.get("val_accuracy")
        if (
            self.train_config.chance_epochs
            and accuracy is not None
            and number >= self.train_config.chance_epochs
            and accuracy <= self.chance + CHANCE_MARGIN
        ):
            self._stop(PRUNED, f"not learning: val_accuracy {accuracy:.4f} is still at chance level "
                                 f"({self.chance:.4f}) after {number} epochs")
        if self.on_epoch is not None:
            reason = self.on_epoch(number, logs)
            if reason and self.state == COMPLETE:
                self._stop(PRUNED, reason)

    def _stop(self, state: str, reason: str) -> None:
        if self.state == COMPLETE:
            self.state, self.reason = state, reason
        self.model.stop_training = True
