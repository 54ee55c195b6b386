"""KerasTuner hypermodels on Optuna: load one, hand its ``build(hp)`` an ``hp`` whose values the Optuna trial draws.

A hypermodel is a ``build(hp)`` function or a ``keras_tuner.HyperModel`` (``HyperXception``, ``HyperResNet`` or
your own subclass, whose ``fit(hp, model, ...)`` override is honoured). :class:`OptunaHyperParameters` is a real
``keras_tuner.HyperParameters``: ``hp.Int``, ``Float``, ``Choice``, ``Boolean`` and ``Fixed`` register the
hyperparameter as KerasTuner does and draw its value through the trial, define-by-run, so a hyperparameter the
build never reaches (a branch not taken, a layer that does not exist) is neither sampled nor recorded.

===============================================  =========================================================
KerasTuner                                       Optuna distribution
===============================================  =========================================================
``Int(min, max, step=s)`` (linear; s = 1 default) ``IntDistribution(min, max', step=s)``, max' on the step grid
``Int(min, max, sampling="log")``                ``IntDistribution(min, max, log=True)``
``Int(..., step=s, sampling="log")``             ``CategoricalDistribution(min·s^i ≤ max)`` (KerasTuner's grid)
``Float(min, max)`` / ``step=s``                 ``FloatDistribution(min, max)`` / ``step=s``
``Float(min, max, sampling="log")``              ``FloatDistribution(min, max, log=True)``
``Float(..., step=s, sampling="log")``           ``CategoricalDistribution(min·s^i ≤ max)``
``sampling="reverse_log"``                       treated as linear (Optuna has no reverse-log)
``Choice(values)``                               ``CategoricalDistribution(values)``
``Boolean()``                                    ``CategoricalDistribution((False, True))``
``Fixed(value)``                                 ``CategoricalDistribution((value,))`` (recorded, never varies)
===============================================  =========================================================

Example:
    >>> import optuna
    >>> def build_model(hp):
    ...     hp.Int("units", 16, 64, step=16)
    ...     return None
    >>> hp = OptunaHyperParameters(optuna.trial.FixedTrial({"units": 32}))
    >>> build_model(hp) is None, hp.get("units")
    (True, 32)
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from tuning._keras import import_keras
from tuning.errors import SpaceError, user_error
from tuning.space import Searched

if TYPE_CHECKING:
    from tuning.data import Dataset

import_keras()  # quietly: KerasTuner imports TensorFlow, whose start-up lines are noise
import keras_tuner  # noqa: E402

__all__ = ["FirstBuild", "OptunaHyperParameters", "as_hypermodel", "check_first_build", "declared",
           "describe_declared", "describe_hypermodel", "for_space", "load", "to_distribution"]

_KEY = "model.hypermodel"


class OptunaHyperParameters(keras_tuner.HyperParameters):
    """A ``keras_tuner.HyperParameters`` whose values an Optuna trial (or ``FixedTrial``) draws as they are declared.

    Everything else (``hp.get``, ``hp.values``, ``conditional_scope``, ``parent_name``/``parent_values``,
    ``name_scope``) is KerasTuner's own. Parameter names are the hypermodel's (``units_0``, ``lr``).

    Example:
        >>> import optuna
        >>> hp = OptunaHyperParameters(optuna.trial.FixedTrial({"deep": False}))
        >>> deep = hp.Boolean("deep")
        >>> with hp.conditional_scope("deep", [True]):
        ...     extra = hp.Int("extra_units", 8, 64)   # inactive: not drawn, not recorded
        >>> deep, extra, hp.values
        (False, None, {'deep': False})
    """

    def __init__(self, trial: Any) -> None:
        super().__init__()
        self.trial = trial

    def _register(self, hyperparameter: Any, overwrite: bool = False) -> Any:
        name = hyperparameter.name
        known = name in self.values
        value = super()._register(hyperparameter, overwrite)
        if name in self.values and not known:  # newly active: the trial draws it instead of the default
            value = self.values[name] = _draw(self.trial, hyperparameter)
        return value


def to_distribution(hp: Any) -> BaseDistribution:
    """The Optuna distribution of one KerasTuner hyperparameter (see the module's table).

    Example:
        >>> from keras_tuner.engine.hyperparameters import Float, Int
        >>> to_distribution(Float("lr", 1e-4, 1e-2, sampling="log"))
        FloatDistribution(high=0.01, log=True, low=0.0001, step=None)
        >>> to_distribution(Int("units", 32, 500, step=32))
        IntDistribution(high=480, log=False, low=32, step=32)
    """
    hp_types = keras_tuner.engine.hyperparameters
    if isinstance(hp, hp_types.Boolean):
        return CategoricalDistribution((False, True))
    if isinstance(hp, hp_types.Fixed):
        return CategoricalDistribution((hp.value,))
    if isinstance(hp, hp_types.Choice):
        return CategoricalDistribution(tuple(hp.values))
    if isinstance(hp, hp_types.Int | hp_types.Float):
        is_int = isinstance(hp, hp_types.Int)
        low, high, step, log = hp.min_value, hp.max_value, hp.step, hp.sampling == "log"
        if log and step is not None and step != 1:  # KerasTuner multiplies by step: a finite grid
            n = int(math.log(high / low, step) + 1e-8) + 1
            values = [low * step**i for i in range(n)]
            return CategoricalDistribution(tuple(int(round(v)) if is_int else float(v) for v in values))
        if is_int:
            step = step or 1
            return IntDistribution(int(low), int(low + (high - low) // step * step), log=log and step == 1,
                                   step=1 if log else int(step))
        if step is not None:
            n = math.floor((high - low) / step + 1e-9)
            return FloatDistribution(float(low), float(f"{low + n * step:.12g}"), step=float(step))
        return FloatDistribution(float(low), float(high), log=log)
    raise TypeError(f"unsupported KerasTuner hyperparameter {type(hp).__name__} ({getattr(hp, 'name', hp)!r})")


def _draw(trial: Any, hp: Any) -> Any:
    return Searched(to_distribution(hp)).suggest(trial, hp.name)


# ------------------------------------------------------------------------------------------------- loading


def load(reference: str, base_dir: str | Path | None = None) -> keras_tuner.HyperModel:
    """Import the hypermodel ``reference`` names: ``file.py:attribute`` or ``package.module:attribute``.

    A relative file is looked up in ``base_dir`` (the space file's folder) and that folder is importable while
    the file runs, so it may import its neighbours. Loading runs the file's code, as any Python config does.

    Raises:
        SpaceError: at ``model.hypermodel``, naming the file or module, the attribute and what went wrong.

    Example:
        >>> load("keras_tuner.applications:HyperXception")  # doctest: +SKIP
    """
    module_ref, sep, attribute = reference.rpartition(":")
    if not sep or not module_ref or not attribute:
        raise SpaceError(_KEY, "must be `file.py:attribute` or `package.module:attribute`", received=reference,
                         fix="write e.g. hypermodel: my_models.py:build_model")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    with _importable(base):
        if module_ref.endswith(".py"):
            path = Path(module_ref).expanduser()
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                raise SpaceError(_KEY, f"the file {path} does not exist", received=reference,
                                 fix="write the path relative to the space file's folder, or an absolute path")
            module = _run_file(path, reference)
            where = str(path)
        else:
            try:
                module = importlib.import_module(module_ref)
            except Exception as exc:
                raise SpaceError(_KEY, f"cannot import the module {module_ref}: {_one_line(exc)}",
                                 received=reference, fix="check the module name, or name a file: "
                                 "my_models.py:build_model") from exc
            where = f"module {module_ref}"
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            found = sorted(n for n in dir(module) if not n.startswith("_"))
            raise SpaceError(_KEY, f"{where} has no attribute {attribute!r}", received=reference,
                             fix=f"name one of: {', '.join(found[:20]) or 'nothing defined there'}")
        obj = getattr(obj, part)
    try:
        return as_hypermodel(obj)
    except Exception as exc:
        raise SpaceError(_KEY, f"{attribute} in {where} is not a hypermodel: {_one_line(exc)}", received=reference,
                         fix="name a build(hp) function or a keras_tuner.HyperModel") from exc


def for_space(space: Any) -> keras_tuner.HyperModel:
    """Load the hypermodel a ``family: hypermodel`` space names in ``model.hypermodel`` (relative to its file).

    Raises:
        SpaceError: at ``model.hypermodel``: none named, or it cannot be loaded.
    """
    reference = space.specs["model.hypermodel"].value
    if reference is None:
        raise SpaceError(_KEY, "no hypermodel given", fix="set model.hypermodel: my_models.py:build_model, or pass "
                         "hypermodel= to tuning.run")
    base = Path(space.source).resolve().parent if space.source else None
    return load(reference, base)


def as_hypermodel(obj: Any) -> keras_tuner.HyperModel:
    """``obj`` as a ``keras_tuner.HyperModel``: an instance as is, a ``build(hp)`` function wrapped, a HyperModel
    subclass instantiated without arguments.

    Example:
        >>> as_hypermodel(lambda hp: None).build(None) is None
        True
    """
    if isinstance(obj, keras_tuner.HyperModel):
        return obj
    if isinstance(obj, type) and issubclass(obj, keras_tuner.HyperModel):
        return obj()
    if callable(obj):
        return _FunctionHyperModel(obj)
    raise user_error("a hypermodel must be a build(hp) function or a keras_tuner.HyperModel",
                     received=type(obj).__name__, fix="pass e.g. hypermodel=build_model")


class _FunctionHyperModel(keras_tuner.HyperModel):
    """A ``build(hp)`` function as a HyperModel (KerasTuner wraps functions the same way)."""

    def __init__(self, build: Any) -> None:
        super().__init__(name=getattr(build, "__name__", None))
        self.build = build  # type: ignore[method-assign]


def declared(hypermodel: keras_tuner.HyperModel, reference: str | None = None) -> keras_tuner.HyperParameters:
    """Build ``hypermodel`` once with default values, as KerasTuner does, and return the hyperparameters it declared.

    Example:
        >>> declared(as_hypermodel(lambda hp: hp.Int("units", 8, 64))).values
        {'units': 8}

    Raises:
        SpaceError: at ``model.hypermodel`` when the build raises, with the exception's own message.
    """
    try:
        return _build_once(hypermodel, reference)[0]
    finally:
        _clear_session()


@dataclass
class FirstBuild:
    """What :func:`check_first_build` learnt from building a hypermodel once with default values.

    ``hp`` holds the hyperparameters the build declared; ``fit_names`` those the user's ``fit`` declared in the
    dry call (empty without a ``fit`` override or a dry call), ``fit_received`` what that ``fit`` passed to
    ``model.fit`` (``batch_size``, ``epochs``, ...), and ``notes`` what could not be checked, and why.
    """

    hp: keras_tuner.HyperParameters
    fit_names: list[str] = field(default_factory=list)
    fit_received: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def build_names(self) -> list[str]:
        """The names of the hyperparameters the build declared, in order."""
        return [item.name for item in self.hp.space if item.name not in self.fit_names]


def check_first_build(hypermodel: keras_tuner.HyperModel, space: Any, data: Dataset | None = None, *,
                      reference: str | None = None, dry_fit: bool = False) -> FirstBuild:
    """Build ``hypermodel`` once with default values (as KerasTuner does) and refuse what would fail every trial.

    Refused, all problems at once: a build that raises; a build that returns something other than a Keras model
    (``42``, ``None``); a model whose input does not take ``data``'s images, or whose single output is not one
    probability per class of ``data`` (``Dense(3)`` for 10 classes, an output left unflattened); a hyperparameter
    named like a key of ``space`` (``hp.Choice("train.batch_size", ...)`` while the space has
    ``train.batch_size``: Optuna would draw both as one parameter). Without ``data`` the input and output are not
    checked. A model whose output shape cannot be known before it trains is not checked either (a note says so).

    ``dry_fit`` also calls a ``HyperModel.fit`` override once, with a stand-in for ``model.fit`` that records
    its arguments and trains nothing (``tuning validate``), so that the hyperparameters ``fit`` declares are
    listed and checked too; a ``fit`` that needs a real training run to go on (it reads the returned history)
    gets a note instead. ``tuning.run`` does not dry-run ``fit``: the user's code may have side effects.

    Example:
        >>> import keras
        >>> def build(hp):
        ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Int("units", 3, 9))])
        >>> check_first_build(as_hypermodel(build), space).build_names  # doctest: +SKIP
        ['units']

    Raises:
        SpaceError: at ``model.hypermodel``, naming the hypermodel, what its build returned and the fix.
    """
    name = reference or describe_hypermodel(hypermodel)
    try:
        hp, model = _build_once(hypermodel, reference)
        if not isinstance(model, _keras().Model):
            raise SpaceError(_KEY, f"its build(hp) returned {_returned(model)} with default values, not a Keras "
                             "model", received=name, fix="end build(hp) with `return model`, a keras.Model "
                             "(compiled or not)")
        result = FirstBuild(hp)
        errors = _shape_problems(model, data, name, result.notes) if data is not None else []
        if dry_fit:
            _dry_fit(hypermodel, model, data, space, result)
        errors += _name_clashes(result, space, name)
    finally:
        _clear_session()
    if errors:
        raise SpaceError.collect(errors)
    return result


def describe_hypermodel(hypermodel: Any) -> str:
    """How messages name a hypermodel passed from Python: its build function's or class's name.

    Example:
        >>> def build_model(hp):
        ...     return None
        >>> describe_hypermodel(as_hypermodel(build_model))
        'build_model (hypermodel=)'
    """
    return f"{getattr(hypermodel, 'name', None) or type(hypermodel).__name__} (hypermodel=)"


def _build_once(hypermodel: keras_tuner.HyperModel, reference: str | None) -> tuple[keras_tuner.HyperParameters,
                                                                                     Any]:
    """``hypermodel.build`` called once on a fresh ``HyperParameters`` (default values): the ``hp`` and the
    build's return value. The caller clears the Keras session afterwards."""
    hp = keras_tuner.HyperParameters()
    try:
        hypermodel.declare_hyperparameters(hp)
        return hp, hypermodel.build(hp)
    except Exception as exc:
        raise SpaceError(_KEY, f"its build(hp) raised with default values: {type(exc).__name__}: {_one_line(exc)}",
                         received=reference or describe_hypermodel(hypermodel),
                         fix="run it once by hand (build(keras_tuner.HyperParameters())) and fix the error") from exc


def _shape_problems(model: Any, data: Dataset, name: str, notes: list[str]) -> list[SpaceError]:
    """The ways ``model`` cannot train on ``data``: an input that does not take its images, an output that is
    not one probability per class (fewer units than classes, or not one vector per image). A model whose shapes
    cannot be known yet is not checked (a note)."""
    keras = _keras()
    errors = []
    inputs = _known(lambda: model.inputs)
    images = (None, *data.input_shape)
    if inputs and len(inputs) == 1 and not _fits(tuple(inputs[0].shape), images):
        errors.append(SpaceError(
            _KEY, f"its model takes inputs of shape {tuple(inputs[0].shape)}, but the {data.name} images are "
            f"{images}", received=name, fix=f"start the model with keras.Input(shape={data.input_shape})"))
        return errors  # its output cannot be computed for these images
    outputs = _known(lambda: model.outputs)
    if not outputs and isinstance(model, keras.Sequential):  # no Input layer: built on the images' shape
        outputs = _known(lambda: (model.build(images), model.outputs)[1])
    if not outputs:
        outputs = _known(lambda: keras.tree.flatten(model.compute_output_spec(keras.KerasTensor(images))))
    if not outputs:
        notes.append(f"the output of {name} could not be computed before training: not checked against the "
                     f"{data.num_classes} classes of the data")
        return errors
    if len(outputs) != 1:
        notes.append(f"the model of {name} has {len(outputs)} outputs: not checked against the data's classes "
                     "(the toolkit's training feeds one label array)")
        return errors
    shape, classes = tuple(outputs[0].shape), data.num_classes
    binary = classes == 2 and shape == (None, 1) and getattr(model, "compiled", False)  # its own binary loss
    # More units than the largest label + 1 train: a small sample may lack the last classes of a data set.
    fits = len(shape) == 2 and shape[1] is not None and shape[1] >= classes
    if not (fits or binary):
        units = f"{shape[-1]} values per image" if len(shape) == 2 else f"an output of shape {shape}"
        errors.append(SpaceError(
            _KEY, f"its model outputs {units}, but the data has {classes} classes ({data.name}: labels 0 to "
            f"{classes - 1}); the output must have shape (None, {classes})", received=f"{name}, output shape {shape}",
            fix=f"end the model with layers.Dense({classes}, activation=\"softmax\")"
                + ("" if len(shape) == 2 else ", after layers.Flatten()")))
    return errors


def _name_clashes(result: FirstBuild, space: Any, name: str) -> list[SpaceError]:
    """A hyperparameter named like one of the space's keys or parameters: Optuna would see one parameter."""
    searched = space.distributions()
    errors = []
    for item in result.hp.space:
        if item.name not in searched and item.name not in space.specs:
            continue
        where = "fit(hp, model, ...)" if item.name in result.fit_names else "build(hp)"
        if item.name in searched:
            given = f"searched: {Searched(searched[item.name]).values_text()}"
        else:
            given = f"fixed: {space.specs[item.name].to_yaml()}"
        errors.append(SpaceError(
            _KEY, f"its {where} declares the hyperparameter {item.name!r}, which is also a key of the space "
            f"({given}): Optuna would take the two for one parameter", received=name,
            fix=f"rename it in the hypermodel (e.g. {item.name.rpartition('.')[2]!r}), or remove {item.name} from "
                "the space"))
    return errors


def _dry_fit(hypermodel: keras_tuner.HyperModel, model: Any, data: Dataset | None, space: Any,
             result: FirstBuild) -> None:
    """Call the user's ``fit`` override once, its ``model.fit`` a stand-in that records and trains nothing."""
    if type(hypermodel).fit is keras_tuner.HyperModel.fit or isinstance(hypermodel, _FunctionHyperModel):
        return  # KerasTuner's own fit: model.fit(*args, **kwargs), nothing declared
    if data is None:
        result.notes.append("its fit(hp, model, ...) was not dry-run: the data could not be loaded")
        return
    keras = _keras()
    before = {item.name for item in result.hp.space}

    few = slice(0, 8)
    given = {"epochs": space.max_epochs(), "validation_data": (data.x_val[few], data.y_val[few]), "callbacks": [],
             "verbose": 0}

    def recording_fit(*args: Any, **kwargs: Any) -> Any:
        result.fit_received.update({k: v for k, v in kwargs.items() if k not in given or v is not given[k]})
        history = keras.callbacks.History()
        history.history = {}
        return history

    model.fit = recording_fit
    try:
        hypermodel.fit(result.hp, model, data.x_train[few], data.y_train[few], **given)
    except Exception as exc:
        result.notes.append(f"its fit(hp, model, ...) stopped in the dry run ({type(exc).__name__}: "
                            f"{_one_line(exc)}; its model.fit trained nothing and returned an empty history): "
                            "hyperparameters it declares after that point are not listed")
    finally:
        del model.fit  # the instance attribute: model.fit is the class's method again
    result.fit_names = [item.name for item in result.hp.space if item.name not in before]


def _known(get: Any) -> Any:
    """``get()``, or None when Keras cannot tell yet (a model without an Input, a subclassed model)."""
    try:
        return get()
    except Exception:
        return None


def _fits(shape: tuple[Any, ...], images: tuple[Any, ...]) -> bool:
    """Whether a model input of ``shape`` takes images of shape ``images`` (``None`` takes any size)."""
    return len(shape) == len(images) and all(a is None or b is None or a == b for a, b in zip(shape, images,
                                                                                               strict=True))


def _returned(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _keras() -> Any:
    import keras

    return keras


def _clear_session() -> None:
    _keras().backend.clear_session()


def describe_declared(hp: keras_tuner.HyperParameters, names: Collection[str] | None = None) -> str:
    """A table of the declared hyperparameters (those in ``names`` only, when given): name, Optuna kind, values,
    default and condition.

    Example:
        >>> hp = keras_tuner.HyperParameters(); _ = hp.Int("units", 32, 512, step=32)
        >>> print(describe_declared(hp))  # doctest: +NORMALIZE_WHITESPACE
        hyperparameter  kind          values    default  condition
        units           int, step 32  32 … 512  32
    """
    rows = [("hyperparameter", "kind", "values", "default", "condition")]
    for item in hp.space:
        if names is not None and item.name not in names:
            continue
        searched = Searched(to_distribution(item))
        kind = searched.kind() + (", step " + _num(item.step) if getattr(item, "step", None) not in (None, 1)
                                  and searched.kind() in ("int", "float") else "")
        condition = " and ".join(f"{c.name} in {list(c.values)}" for c in item.conditions)
        rows.append((item.name, kind, searched.values_text(), _num(item.default), condition))
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(4)]
    return "\n".join("".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=False)) + r[4] for r in rows).rstrip()


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


@contextlib.contextmanager
def _importable(folder: Path) -> Iterator[None]:
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _run_file(path: Path, reference: str) -> Any:
    name = f"_tuning_hypermodel_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise SpaceError(_KEY, f"running {path} raised {type(exc).__name__}: {_one_line(exc)}", received=reference,
                         fix="fix the error in that file (it runs as Python when the space is loaded)") from exc
    return module


def check_enqueued(entries: list[dict[str, Any]], hp: keras_tuner.HyperParameters) -> list[str]:
    """Check enqueued baselines against the hyperparameters a default build declared.

    A value outside its hyperparameter's range raises; a name the default build did not reach (a conditional
    hyperparameter, say) cannot be checked and is returned as a note.

    Raises:
        SpaceError: at ``study.enqueue[i].<name>`` for a value the hyperparameter cannot take.
    """
    known = {item.name: Searched(to_distribution(item)) for item in hp.space}
    notes, errors = [], []
    for i, entry in enumerate(entries):
        for name, value in entry.items():
            if name.startswith(("model.", "train.")):
                continue
            if name not in known:
                notes.append(f"study.enqueue[{i}].{name} is not declared by a build with default values "
                             "(conditional?); it is used if the build reaches it")
            elif not known[name].contains(value):
                errors.append(SpaceError(f"study.enqueue[{i}].{name}", f"must be {known[name].allowed()}",
                                         received=value, fix="pick a value the hypermodel declares"))
    if errors:
        raise SpaceError.collect(errors)
    return notes
