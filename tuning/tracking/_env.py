"""Environment tags for every run: library versions, the device that trains, the host."""

from __future__ import annotations

import functools
import platform
import socket
import sys
from importlib import metadata


def _version(*distributions: str) -> str:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def _device() -> str:
    """``"CPU"``, or the GPU name(s) TensorFlow sees (``"GPU: NVIDIA A100-SXM4-40GB"``).

    TensorFlow is never imported here: importing it from a second thread while a trial imports it
    breaks the import. Call this from a thread that has trained a model.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return "CPU"
    try:
        gpus = tf.config.list_physical_devices("GPU")
    except Exception:  # no TensorFlow, or it cannot list devices: we train on the CPU either way
        return "CPU"
    if not gpus:
        return "CPU"
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name") or gpu.name)
        except Exception:
            names.append(gpu.name)
    return "GPU: " + ", ".join(names)


@functools.cache
def environment_tags() -> dict[str, str]:
    """Tags naming the software and hardware a run used (computed once per process, in a trial's thread).

    Example:
        >>> sorted(environment_tags())  # doctest: +SKIP
        ['env.device', 'env.host', 'env.keras', 'env.mlflow', 'env.optuna', 'env.python', 'env.tensorflow']
    """
    return {
        "env.tensorflow": _version("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
        "env.keras": _version("keras"),
        "env.optuna": _version("optuna"),
        "env.mlflow": _version("mlflow", "mlflow-skinny"),
        "env.python": platform.python_version(),
        "env.platform": sys.platform,
        "env.device": _device(),
        "env.host": socket.gethostname(),
    }
