"""Import Keras (and TensorFlow behind it) once, without TensorFlow's C++ start-up lines on the terminal.

TensorFlow 2.21 writes "oneDNN custom operations are on" and "Could not find cuda drivers" to file
descriptor 2 before its logging is set up, whatever TF_CPP_MIN_LOG_LEVEL says. Python exceptions raised by
the import are unaffected: they surface after standard error is restored. Set ``TUNING_TF_LOGS=1`` to see
the lines.

A ``tuning run --workers``/``--gpus`` worker applies its share of the CPU cores and its GPU's memory growth right
after the import (:func:`configure_tensorflow`, from the environment the parent process planned).

Example:
    >>> keras = import_keras()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any

#: Environment variables a ``tuning run --workers``/``--gpus`` worker process reads (its parent plans them):
#: its share of the CPU threads, its GPU, and its index among the workers (0 for a lone process).
THREADS_ENV = "TUNING_CPU_THREADS"
GPU_ENV = "TUNING_GPU"
WORKER_INDEX_ENV = "TUNING_WORKER_INDEX"


def import_keras() -> ModuleType:
    """Return the ``keras`` module, importing it quietly the first time."""
    if "keras" in sys.modules or os.environ.get("TUNING_TF_LOGS"):
        import keras

        return keras
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras
            import tensorflow  # noqa: F401  (its import prints the lines; keras may import it lazily)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    configure_tensorflow(sys.modules["tensorflow"])  # a --workers/--gpus worker's threads and GPU memory growth
    return keras


def configure_tensorflow(tf: Any) -> None:
    """In a worker: apply its thread share and GPU memory growth, right after TensorFlow is imported.

    Does nothing outside ``--workers``/``--gpus`` workers.
    """
    threads = os.environ.get(THREADS_ENV)
    try:
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(os.environ.get("TF_NUM_INTEROP_THREADS", "1")))
        if os.environ.get(GPU_ENV):
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # TensorFlow already started (a second study in the same process): keep its settings
        pass
