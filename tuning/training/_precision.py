"""``train.precision: auto``: the fastest Keras dtype policy this machine trains accurately with.

- a GPU with bfloat16 (compute capability 8.0 or newer): ``mixed_bfloat16``; an older GPU with float16 tensor
  cores (7.0 or newer): ``mixed_float16``;
- a CPU with bfloat16 instructions: AMX (``amx_bf16`` in ``/proc/cpuinfo``: Intel Sapphire Rapids and newer,
  about 2.7× float32 at batch 1024 on a 2-core Xeon) or AVX-512 BF16 (``avx512_bf16``: AMD Zen 4 and newer, Intel
  Cooper Lake): ``mixed_bfloat16``, which TensorFlow's oneDNN kernels run natively. On this project's 2-core
  AMD EPYC, CNNs of the time-to-accuracy space trained 1.45–1.9× faster per epoch at batch 64 than in float32,
  with the same validation accuracy after 4 epochs to within ±0.01 (``scripts/bench_throughput.py`` measures it);
- otherwise ``float32`` (a CPU without bfloat16 instructions would emulate it, which is slower).

``mixed_bfloat16`` set explicitly on a machine with neither (a space written on another machine) trains, but the
line a study prints says that it is emulated: on a 2-core Intel Xeon whose virtual machine exposes no bfloat16
instructions, the tutorial CNN trained 3.9× (batch 256) and 5.5× (batch 1024) slower than in float32, and a
bfloat16 matmul reached 62 against 311 GFLOP/s (``scripts/bench_throughput.py --images 6000``).

Outputs stay float32 (the models' softmax layers say so), so losses and metrics are comparable across policies.

Example:
    >>> resolve("float32")
    ('float32', 'as set in train.precision')
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

AUTO = "auto"


def describe(precision: str) -> str:
    """The line a study prints when it starts: the dtype policy its trials train with, and why.

    Example:
        >>> describe("float32")
        'Precision: float32 (as set in train.precision)'
    """
    policy, why = resolve(precision)
    return f"Precision: {policy} ({why})"


def resolve(precision: str, *, cpu_flags: Iterable[str] | None = None) -> tuple[str, str]:
    """The Keras dtype policy for ``precision`` and why it was chosen (``auto`` looks at the hardware).

    ``cpu_flags`` are the CPU's feature flags (default: this machine's, from ``/proc/cpuinfo``).

    Example:
        >>> resolve("auto", cpu_flags={"avx512f", "amx_bf16"})  # doctest: +SKIP
        ('mixed_bfloat16', 'auto: this CPU has AMX bfloat16 units')
    """
    flags = frozenset(_cpu_flags() if cpu_flags is None else cpu_flags)
    if precision == AUTO:
        return _detect(flags)
    if precision == "mixed_bfloat16" and not flags & _BF16_FLAGS and not _gpus():
        return precision, ("as set in train.precision, but this CPU has no bfloat16 instructions and there is no "
                           "GPU: TensorFlow emulates it, slower than float32; set train.precision to auto")
    return precision, "as set in train.precision"


#: CPU flags of native bfloat16 instructions (``/proc/cpuinfo``).
_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.cache
def _gpus() -> tuple[tuple[int, ...], ...]:
    """The compute capability of each GPU TensorFlow sees (imports TensorFlow)."""
    import tensorflow as tf

    return tuple(tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0))
                 for gpu in tf.config.list_physical_devices("GPU"))


@functools.cache
def _detect(flags: frozenset[str]) -> tuple[str, str]:
    for capability in _gpus():
        version = ".".join(str(n) for n in capability)
        if capability >= (8, 0):
            return "mixed_bfloat16", f"auto: the GPU supports bfloat16 (compute capability {version})"
        if capability >= (7, 0):
            return "mixed_float16", f"auto: the GPU has float16 tensor cores (compute capability {version})"
    if "amx_bf16" in flags:
        return "mixed_bfloat16", "auto: this CPU has AMX bfloat16 units"
    if "avx512_bf16" in flags:
        return "mixed_bfloat16", "auto: this CPU has AVX-512 bfloat16 instructions"
    return "float32", "auto: no GPU and no bfloat16 instructions on this CPU, so float32"


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()
