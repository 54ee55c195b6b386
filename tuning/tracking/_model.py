"""Trained Keras models as MLflow logged models (TensorFlow flavour): signature, input example, metadata.

A logged model is what MLflow's model registry, ``mlflow models serve`` and ``mlflow.pyfunc.load_model``
work with. Everything here goes through an explicit ``MlflowClient`` and run id; the model is saved by
MLflow's ``tensorflow`` flavour (the ``keras`` flavour of MLflow 3.17 cannot save an input example).
Called from the tracker's worker thread only.

Example:
    >>> requirements()[0].startswith("keras==")  # pinned to what is installed
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.models import ModelSignature

log = logging.getLogger("tuning.tracking")

#: The name of the study's best model on its parent run, and of a trial's own model (``--keep-models``).
BEST_MODEL = "best_model"
TRIAL_MODEL = "model"


def signature(input_shape: Sequence[int], classes: int) -> ModelSignature:
    """Float32 images of ``input_shape`` in (any batch size), ``classes`` float32 probabilities out."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, *input_shape))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, classes))]),
    )


def log_keras_model(
    client: MlflowClient,
    experiment_id: str,
    run_id: str,
    model: Any,
    *,
    name: str,
    input_example: Any = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log ``model`` as an MLflow logged model of run ``run_id``; returns its id (``models:/<id>`` loads it).

    The signature comes from the model's own input and output shapes; ``metadata`` (what the model expects:
    :meth:`tuning.data.Dataset.input_description`) lands in its ``MLmodel`` file.
    """
    from mlflow.models import Model

    logged = client.create_logged_model(
        experiment_id, name=name, source_run_id=run_id, tags=dict(tags or {}), model_type="keras"
    )
    shape = tuple(int(d) for d in model.input_shape[1:])
    classes = int(model.output_shape[-1])
    with _current_uri(client.tracking_uri):  # Model.log resolves its client from the current URI
        Model.log(
            artifact_path=None,
            name=name,
            flavor=_tensorflow_flavour(),
            run_id=run_id,
            model_id=logged.model_id,
            model=model,
            signature=signature(shape, classes),
            input_example=input_example,
            metadata=dict(metadata or {}),
            pip_requirements=requirements(),
            validate_serving_input=False,  # see _tensorflow_flavour
        )
    client.finalize_logged_model(logged.model_id, "READY")
    return logged.model_id


def register(client: MlflowClient, name: str, model_id: str, run_id: str) -> str:
    """Register logged model ``model_id`` as a new version of registered model ``name`` (created if missing).

    Returns:
        The new version's URI, ``models:/NAME/VERSION``.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with _current_uri(client.tracking_uri):  # the registry looks models:/<id> up at the current URI
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id)
    return f"models:/{name}/{version.version}"


@contextlib.contextmanager
def _current_uri(uri: str) -> Iterator[None]:
    """MLflow's current tracking URI set to ``uri`` inside the block, everything put back afterwards.

    MLflow's own ``_use_tracking_uri`` goes through ``set_tracking_uri``, which also writes the
    ``MLFLOW_TRACKING_URI`` environment variable and leaves it set to the old URI afterwards: a later study
    of the same process then tracked into that (default, relative) location instead of its own ``mlruns/``.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = os.environ.get(_ENV)
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = saved


_ENV = "MLFLOW_TRACKING_URI"


def requirements() -> list[str]:
    """The pip requirements of a saved model: the installed Keras and TensorFlow, pinned.

    Given explicitly, MLflow does not load the model in a subprocess to infer them (5-7 s each).
    """
    from importlib import metadata

    pinned = []
    for names in (("keras",), ("tensorflow", "tensorflow-cpu", "tensorflow-macos")):
        for dist in names:
            try:
                pinned.append(f"{dist}=={metadata.version(dist)}")
                break
            except metadata.PackageNotFoundError:
                continue
    return pinned


def _tensorflow_flavour() -> Any:
    """``mlflow.tensorflow`` as ``Model.log`` calls it, minus its serving check of the input example.

    That check reloads the model and predicts, printing Keras's progress bar into the study's output and
    costing a fraction of a second per model; ``Model.log`` skips it on ``validate_serving_input=False`` but
    hands that argument on to the flavour, whose ``save_model`` does not take it.
    """
    import types

    import mlflow.tensorflow

    def save_model(path: str, validate_serving_input: bool = False, **kwargs: Any) -> None:
        mlflow.tensorflow.save_model(path=path, **kwargs)

    flavour = types.ModuleType("mlflow.tensorflow")
    flavour.save_model = save_model  # type: ignore[attr-defined]
    return flavour
