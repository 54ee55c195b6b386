"""Import Keras (and TensorFlow behind it) once, without TensorFlow's C++ start-up lines on the terminal.

TensorFlow 2.21 writes "oneDNN custom operations are on" and "Could not find cuda drivers" to file
descriptor 2 before its logging is set up, whatever TF_CPP_MIN_LOG_LEVEL says. Python exceptions raised by
the import are unaffected: they surface after standard error is restored. Set ``TUNING_TF_LOGS=1`` to see
the lines.

Example:
    >>> keras = import_keras()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from types import ModuleType


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
    from tuning._workers import configure_tensorflow

    configure_tensorflow(sys.modules["tensorflow"])  # a --workers/--gpus worker's threads and GPU memory growth
    return keras
