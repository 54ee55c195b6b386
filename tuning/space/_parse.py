"""Turn a plain dict (from YAML or Python) into the parts of a :class:`SearchSpace`, collecting every problem.

Nothing stops at the first mistake: each check appends a :class:`SpaceError` (key path, what was received,
what is allowed, a fix) and :func:`parse` raises them together with ``SpaceError.collect``.

Example:
    >>> parts = parse({"model": {"family": "mlp"}, "train": {"epochs": 2}})
    >>> parts.specs["model.width"]
    Fixed(value=128)
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tuning import models
from tuning import schema as S
from tuning.errors import SpaceError, printable, study_name_problem
from tuning.records import MEASURED_OBJECTIVES
from tuning.space._sections import DataSpec, Objective, StudySpec
from tuning.space._specs import AnySpec, Fixed, PerLayer, Searched
from tuning.space._yaml import check_limits

_BAD: Any = object()  # a value that failed its checks (the error is already recorded)



@dataclass(frozen=True)
class Parsed:
    """The validated parts of a space."""

    data: DataSpec
    specs: dict[str, AnySpec]
    objectives: tuple[Objective, ...]
    study: StudySpec


class _Errors(list):
    def add(self, path: str, problem: str, fix: str | None = None, **received: Any) -> None:
        self.append(SpaceError(path, problem, fix=fix, **received))


def parse(d: Any, source: str | None = None) -> Parsed:
    """Validate ``d`` and return its parts; raise one :class:`SpaceError` listing every problem.

    A dict nested deeper or holding more values than a YAML file may is refused first (:func:`check_limits`).
    """
    check_limits(d, source=source)
    errs = _Errors()
    if not isinstance(d, Mapping):
        errs.add("", "a search space must be a mapping of sections (data, model, train, objective, study)",
                 received=type(d).__name__, fix="start the file with `model:` and `train:` sections")
        raise SpaceError.collect(errs, source=source)
    for name in d:
        if name not in S.SECTIONS:
            _unknown(errs, str(name), name, S.SECTIONS)
    data = _data(_section(d, "data", errs), errs)
    broken: set[str] = set()
    family, specs = _model(d, errs, broken)
    specs.update(_train(d, errs, broken))
    _check_layers(specs, errs)
    objectives = _objectives(d.get("objective"), errs)
    keys = param_keys(family)
    define_by_run = family in models.names() and models.get(family).define_by_run
    study = _study(_section(d, "study", errs), objectives, specs, keys, broken, source, errs, define_by_run)
    if errs:
        raise SpaceError.collect(list(errs), source=source)
    return Parsed(data, specs, objectives, study)


def param_keys(family: str | None) -> dict[str, S.Key]:
    """Every searchable key of a space of ``family`` by its full path: the family's model keys, then ``train``."""
    model = models.get(family).keys if family in models.names() else {}
    return {**{f"model.{k}": v for k, v in model.items()}, **S.TRAIN_PARAM_KEYS}


# ----------------------------------------------------------------------------------------------- helpers


def _did_you_mean(name: str, candidates: Sequence[str]) -> str | None:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


def _unknown(errs: _Errors, path: str, name: Any, allowed: Sequence[str], where: str = "") -> None:
    guess = _did_you_mean(str(name), allowed)
    hint = f"did you mean `{guess}`? " if guess else ""
    errs.add(path, f"unknown key{' in ' + where if where else ''}",
             fix=f"{hint}allowed keys: {', '.join(allowed)}")


def _section(d: Mapping[str, Any], name: str, errs: _Errors) -> Mapping[str, Any]:
    raw = d.get(name)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        errs.add(name, "must be a mapping of keys", received=raw, fix=f"write `{name}:` followed by indented keys")
        return {}
    return raw


def _parse_number(text: str) -> int | float | None:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def scalar(key: S.Key, value: Any, path: str, errs: _Errors) -> Any:
    """Check and normalise one value of ``key`` (numbers written as strings like ``'1e-4'`` are read)."""
    if value is None:
        if key.nullable:
            return None
        errs.add(path, f"must be {key.limits()}, not empty", received="null", fix="write a value after the colon")
        return _BAD
    if key.kind == "bool":
        if isinstance(value, bool):
            return value
        errs.add(path, "must be true or false", received=value, fix="write true or false")
        return _BAD
    if key.kind == "str":
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value:
            errs.add(path, f"must be {key.limits() if key.choices else 'a non-empty string'}", received=value,
                     fix="write a single word" if key.choices else "write a string")
            return _BAD
        if key.choices and value not in key.choices:
            guess = _did_you_mean(value, key.choices)
            errs.add(path, f"must be {key.limits()}", received=value,
                     fix=f"did you mean `{guess}`?" if guess else f"pick one of {', '.join(key.choices)}")
            return _BAD
        return value
    # int or float
    if isinstance(value, bool):
        errs.add(path, f"must be {key.limits()}, not a boolean", received=value,
                 fix="write a number (YAML reads yes/no/on/off/true/false as booleans)")
        return _BAD
    number: Any = value
    if isinstance(value, str):
        number = _parse_number(value)
        if number is None:
            errs.add(path, f"must be {key.limits()}", received=value, fix="write a number such as 3, 0.5 or 1e-4")
            return _BAD
    elif not isinstance(value, int | float):
        errs.add(path, f"must be {key.limits()}", received=value,
                 fix="write one number here" if not isinstance(value, Mapping | list) else
                 "this key takes one number (it is not searchable here)")
        return _BAD
    if key.kind == "int":
        if isinstance(number, float):
            if isinstance(value, str) and number.is_integer():
                number = int(number)
            else:
                whole = math.isfinite(number) and number.is_integer()
                fix = f"write {int(number)}" if whole else "write a whole number"
                errs.add(path, f"must be {key.limits()}", received=value, fix=fix)
                return _BAD
    else:
        number = float(number)
        if not math.isfinite(number):
            errs.add(path, f"must be {key.limits()}, a finite number", received=value, fix="write a finite number")
            return _BAD
    if not key.contains(number):
        errs.add(path, f"must be {key.limits()}", received=value, fix=f"use a value {key.limits().split(' ', 2)[-1]}")
        return _BAD
    return number


def largest_value(spec: AnySpec | None) -> int | None:
    """The largest value an integer key can take: ``model.depth`` bounds per-layer keys, ``train.epochs`` a
    pruner's resource. ``None`` for a missing or per-layer spec."""
    if isinstance(spec, Fixed):
        return spec.value
    if isinstance(spec, Searched):
        d = spec.distribution
        return int(max(d.choices)) if isinstance(d, CategoricalDistribution) else int(d.high)  # type: ignore[attr-defined]
    return None


# ----------------------------------------------------------------------------------------------- value specs


def spec(key: S.Key, raw: Any, path: str, errs: _Errors) -> AnySpec | Any:
    """Parse one searchable value: scalar → Fixed, list → choice, {low, high} → range, per_layer / layers."""
    if isinstance(raw, Mapping) and ("per_layer" in raw or "layers" in raw):
        return _per_layer(key, raw, path, errs)
    return _simple(key, raw, path, errs)


def _simple(key: S.Key, raw: Any, path: str, errs: _Errors) -> Fixed | Searched | Any:
    if isinstance(raw, Mapping):
        return _range(key, raw, path, errs)
    if isinstance(raw, list | tuple):
        return _choice(key, raw, path, errs)
    value = scalar(key, raw, path, errs)
    return _BAD if value is _BAD else Fixed(value)


def _choice(key: S.Key, raw: Sequence[Any], path: str, errs: _Errors) -> Searched | Any:
    if not raw:
        errs.add(path, "an empty list has nothing to choose from", received=[],
                 fix="list at least one value, or write a single value")
        return _BAD
    values: list[Any] = []
    ok = True
    for i, item in enumerate(raw):
        p = f"{path}[{i}]"
        if isinstance(item, Mapping | list | tuple):
            errs.add(p, "a choice must be a single value", received=item,
                     fix="write a flat list such as [16, 32, 64]")
            ok = False
            continue
        value = scalar(key, item, p, errs)
        if value is _BAD:
            ok = False
        elif value in values and any(type(v) is type(value) for v in values if v == value):
            errs.add(p, "appears twice in the list", received=item, fix="remove the duplicate")
            ok = False
        else:
            values.append(value)
    return Searched(CategoricalDistribution(tuple(values))) if ok else _BAD


def _range(key: S.Key, raw: Mapping[str, Any], path: str, errs: _Errors) -> Searched | Any:
    if key.kind not in ("int", "float"):
        errs.add(path, f"a range {{low, high}} needs a numeric key; this key takes {key.limits()}",
                 received=dict(raw), fix="list the values to try instead, e.g. [a, b]")
        return _BAD
    allowed = ("low", "high", "step", "log")
    ok = True
    for name in raw:
        if name not in allowed:
            extra = ("per_layer", "layers") if key.per_layer else ()
            _unknown(errs, f"{path}.{name}", name, allowed + extra, where="a range")
            ok = False
    for bound in ("low", "high"):
        if bound not in raw:
            errs.add(path, f"a range needs `{bound}`", received=dict(raw),
                     fix="write {low: ..., high: ...}, a list of values, or a single value")
            ok = False
    if not ok:
        return _BAD
    low = scalar(key, raw["low"], f"{path}.low", errs)
    high = scalar(key, raw["high"], f"{path}.high", errs)
    step: Any = None
    if raw.get("step") is not None:
        step_key = S.Key("int", low=1) if key.kind == "int" else S.Key("float", low=0, low_open=True)
        step = scalar(step_key, raw["step"], f"{path}.step", errs)
    log = raw.get("log", False)
    if not isinstance(log, bool):
        errs.add(f"{path}.log", "must be true or false", received=log, fix="write log: true")
        return _BAD
    if _BAD in (low, high, step):
        return _BAD
    if low is None or high is None:
        errs.add(path, "a range needs numbers for low and high", received=dict(raw), fix="write both bounds")
        return _BAD
    if low > high:
        errs.add(f"{path}.low", "low must not exceed high", received=f"low={low}, high={high}",
                 fix="swap low and high")
        return _BAD
    if log and low <= 0:
        errs.add(f"{path}.low", "a log range needs low > 0", received=low,
                 fix="raise low above 0, or remove `log: true`")
        return _BAD
    if log and step is not None:
        errs.add(f"{path}.log", "log and step cannot be combined", received=f"log=true, step={step}",
                 fix="remove `step`, or remove `log: true`")
        return _BAD
    if step is not None:
        n = (high - low) / step
        if not math.isclose(n, round(n), abs_tol=1e-8):
            fitted = low + math.floor(n + 1e-8) * step
            errs.add(f"{path}.step", "high - low must be a whole number of steps", received=step,
                     fix=f"set high to {fitted:g} or pick a step that divides {high - low:g}")
            return _BAD
    if key.kind == "int":
        return Searched(IntDistribution(int(low), int(high), log=log, step=int(step or 1)))
    return Searched(FloatDistribution(float(low), float(high), log=log, step=step))


def _per_layer(key: S.Key, raw: Mapping[str, Any], path: str, errs: _Errors) -> Any:
    if not key.per_layer:
        if key.per_layer_hint:
            errs.add(path, key.per_layer_hint, received=dict(raw),
                     fix="write one value, a list or a range, or set family: mlp")
        else:
            errs.add(path, "cannot vary per layer", received=dict(raw), fix="write one value, a list or a range")
        return _BAD
    if "per_layer" in raw and "layers" in raw or len(raw) != 1:
        errs.add(path, "write either {per_layer: <spec>} or {layers: [<spec>, ...]}, with nothing else",
                 received=dict(raw), fix="keep only one of per_layer and layers")
        return _BAD
    if "per_layer" in raw:
        inner = raw["per_layer"]
        p = f"{path}.per_layer"
        if isinstance(inner, Mapping) and ("per_layer" in inner or "layers" in inner):
            errs.add(p, "per_layer cannot be nested", received=dict(inner), fix="write per_layer: [16, 32, 64]")
            return _BAD
        one = _simple(key, inner, p, errs)
        return _BAD if one is _BAD else PerLayer("per_layer", (one,))
    layers = raw["layers"]
    p = f"{path}.layers"
    if not isinstance(layers, list | tuple) or not layers:
        errs.add(p, "must be a non-empty list with one spec per layer", received=layers,
                 fix="write layers: [32, 64] (each item a value, a list or a range)")
        return _BAD
    specs = []
    for i, item in enumerate(layers):
        if isinstance(item, Mapping) and ("per_layer" in item or "layers" in item):
            errs.add(f"{p}[{i}]", "a layer's spec cannot be per_layer or layers", received=dict(item),
                     fix="write a value, a list or a range")
            specs.append(_BAD)
            continue
        specs.append(_simple(key, item, f"{p}[{i}]", errs))
    return _BAD if _BAD in specs else PerLayer("layers", tuple(specs))


# ----------------------------------------------------------------------------------------------- sections


def _data(raw: Mapping[str, Any], errs: _Errors) -> DataSpec:
    values: dict[str, Any] = {}
    for name in raw:
        if name not in S.DATA:
            _unknown(errs, f"data.{name}", name, tuple(S.DATA), where="data")
    for name, key in S.DATA.items():
        path = f"data.{name}"
        if name not in raw:
            values[name] = key.default
            continue
        value = raw[name]
        if isinstance(value, Mapping | list | tuple):
            errs.add(path, "data values are fixed, not searchable", received=value, fix="write one value")
            continue
        checked = scalar(key, value, path, errs)
        if checked is not _BAD:
            values[name] = checked
    if values.get("dataset") == "npz" and not values.get("path") and "path" in values:
        errs.add("data.path", "required when dataset is npz", received="null",
                 fix="set path to an .npz file with x_train, y_train, x_test, y_test")
    return DataSpec(**{k: values.get(k, S.DATA[k].default) for k in S.DATA})


def _model(d: Mapping[str, Any], errs: _Errors, broken: set[str]) -> tuple[str | None, dict[str, AnySpec]]:
    names = models.names()
    choices = " or ".join(f"family: {n}" for n in names)
    if "model" not in d:
        errs.add("model", "required section is missing", fix=f"add `model: {{family: {names[0]}}}` ({choices})")
        broken.add("model")
        return None, {}
    raw = _section(d, "model", errs)
    family: str | None = None
    if "family" not in raw:
        if d.get("model") is None or isinstance(d.get("model"), Mapping):
            errs.add("model.family", "required", fix=f"add `{choices.replace(' or ', '` or `')}`")
    elif isinstance(raw["family"], list | tuple | Mapping):
        errs.add("model.family", "is fixed: one study tunes one family", received=raw["family"],
                 fix=f"write {choices}, and run one study per family")
    else:
        checked = scalar(S.Key("str", choices=names), raw["family"], "model.family", errs)
        family = None if checked is _BAD else checked
    if family is None:  # which keys are allowed depends on the family: only unknown ones can be reported
        broken.add("model")
        known = {k for n in names for k in models.get(n).keys}
        for name in raw:
            if name != "family" and name not in known:
                _unknown(errs, f"model.{name}", name, ("family", *sorted(known)), where="model")
        return None, {}
    table = models.get(family).keys
    for name in raw:
        if name == "family" or name in table:
            continue
        owners = [n for n in names if name in models.get(n).keys]
        if owners:
            noun = models.get(owners[0]).keys[name].noun or name
            errs.add(f"model.{name}", f"only a {' or '.join(owners)} has {noun}; family is {family}",
                     fix=f"remove it or set family: {owners[0]}")
        else:
            _unknown(errs, f"model.{name}", name, ("family", *table), where=f"model (family {family})")
    return family, {"model.family": Fixed(family), **_keys("model", table, raw, errs, broken)}


def _keys(prefix: str, table: Mapping[str, S.Key], raw: Mapping[str, Any], errs: _Errors,
          broken: set[str]) -> dict[str, AnySpec]:
    specs: dict[str, AnySpec] = {}
    for name, key in table.items():
        path = f"{prefix}.{name}"
        if name not in raw:
            if key.required:
                errs.add(path, "required", fix="add it, e.g. `epochs: 5` or `epochs: {low: 2, high: 10}`")
                broken.add(path)
            else:
                specs[path] = Fixed(key.default)
            continue
        value = raw[name]
        if not key.searchable and isinstance(value, Mapping | list | tuple):
            errs.add(path, "is fixed, not searchable", received=value, fix="write one value")
            broken.add(path)
            continue
        parsed = spec(key, value, path, errs)
        if parsed is _BAD:
            broken.add(path)
        else:
            specs[path] = parsed
    return specs


def _train(d: Mapping[str, Any], errs: _Errors, broken: set[str]) -> dict[str, AnySpec]:
    if "train" not in d:
        errs.add("train", "required section is missing", fix="add `train: {epochs: 5}`")
        broken.update(f"train.{k}" for k in S.TRAIN)
        return {}
    raw = _section(d, "train", errs)
    for name in raw:
        if name not in S.TRAIN and name != "augmentation":
            _unknown(errs, f"train.{name}", name, (*S.TRAIN, "augmentation"), where="train")
    specs = _keys("train", S.TRAIN, raw, errs, broken)
    aug = raw.get("augmentation") or {}
    if not isinstance(aug, Mapping):
        errs.add("train.augmentation", "must be a mapping of rotation, shift, zoom, flip", received=aug,
                 fix="write augmentation: {rotation: 0.05, shift: 0.1}")
        aug = {}
    for name in aug:
        if name not in S.AUGMENTATION:
            _unknown(errs, f"train.augmentation.{name}", name, tuple(S.AUGMENTATION), where="augmentation")
    specs.update(_keys("train.augmentation", S.AUGMENTATION, aug, errs, broken))
    return specs


def _check_layers(specs: dict[str, AnySpec], errs: _Errors) -> None:
    deepest = largest_value(specs.get("model.depth"))
    if deepest is None:
        return
    for path, s in specs.items():
        if isinstance(s, PerLayer) and s.mode == "layers" and len(s.specs) < deepest:
            errs.add(f"{path}.layers", f"gives {len(s.specs)} layer(s) but model.depth can reach {deepest}",
                     received=len(s.specs), fix="add a spec for every layer, or lower model.depth")


def _objectives(raw: Any, errs: _Errors) -> tuple[Objective, ...]:
    if raw is None:
        return (Objective("val_accuracy", "maximize"),)
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    if not items:
        errs.add("objective", "an empty list names no objective", received=[], fix="write objective: val_accuracy")
        return ()
    out: list[Objective] = []
    for i, item in enumerate(items):
        path = f"objective[{i}]" if isinstance(raw, list | tuple) else "objective"
        direction = None
        if isinstance(item, Mapping):
            for name in item:
                if name not in ("metric", "direction"):
                    _unknown(errs, f"{path}.{name}", name, ("metric", "direction"), where="an objective")
            if "metric" not in item:
                errs.add(path, "needs a metric", received=dict(item), fix="write {metric: val_accuracy}")
                continue
            metric = item["metric"]
            direction = item.get("direction")
            mpath = f"{path}.metric"
        else:
            metric, mpath = item, path
        metric = scalar(S.Key("str", choices=S.METRICS), metric, mpath, errs)
        if direction is not None:
            direction = scalar(S.Key("str", choices=S.DIRECTIONS), direction, f"{path}.direction", errs)
        if _BAD in (metric, direction):
            continue
        if direction is None:
            direction = "maximize" if metric.endswith("accuracy") else "minimize"
        if any(o.metric == metric for o in out):
            errs.add(path, "duplicate metric: each objective must be a different metric", received=metric,
                     fix="remove the duplicate")
            continue
        out.append(Objective(metric, direction))
    return tuple(out)


def _typed(raw: Any, names: Sequence[str], path: str, errs: _Errors) -> dict[str, Any] | None:
    if raw is None and "none" in names:
        return {"type": "none"}
    if isinstance(raw, Mapping) and "optunahub" in raw and "type" not in raw and "optunahub" in names:
        package = raw["optunahub"]  # {optunahub: samplers/dehb, ...}: an OptunaHub package and its options
        if not isinstance(package, str) or package.count("/") != 1:
            errs.add(f"{path}.optunahub", "names an OptunaHub package as <kind>/<name>", received=package,
                     fix="write e.g. {optunahub: samplers/auto_sampler} (see https://hub.optuna.org)")
            return None
        return {"type": "optunahub", "package": package, **{str(k): v for k, v in raw.items() if k != "optunahub"}}
    if isinstance(raw, Mapping):
        if "type" not in raw:
            errs.add(path, "a mapping needs `type`", received=dict(raw), fix=f"write {{type: {names[0]}, ...}}")
            return None
        kind = scalar(S.Key("str", choices=tuple(names)), raw["type"], f"{path}.type", errs)
        return None if kind is _BAD else {"type": kind, **{str(k): v for k, v in raw.items() if k != "type"}}
    kind = scalar(S.Key("str", choices=tuple(names)), raw, path, errs)
    return None if kind is _BAD else {"type": kind}


def _study(raw: Mapping[str, Any], objectives: tuple[Objective, ...], specs: dict[str, AnySpec],
           keys: Mapping[str, S.Key], broken: set[str], source: str | None, errs: _Errors,
           define_by_run: bool = False) -> StudySpec:
    allowed = S.STUDY_ORDER
    for name in raw:
        if name not in allowed:
            _unknown(errs, f"study.{name}", name, allowed, where="study")
    values: dict[str, Any] = {}
    for name, key in S.STUDY.items():
        if name not in raw:
            continue
        if isinstance(raw[name], Mapping | list | tuple):
            errs.add(f"study.{name}", "takes one value", received=raw[name], fix="write one value")
            continue
        checked = scalar(key, raw[name], f"study.{name}", errs)
        if checked is not _BAD:
            values[name] = checked
    bad_name = study_name_problem(values["name"]) if values.get("name") is not None else None
    if bad_name is not None:  # a default name from the file's name is checked where it is used (tuning.run)
        errs.add("study.name", bad_name[0], received=printable(values["name"]), fix=bad_name[1])
    if values.get("name") is None:
        values["name"] = Path(source).stem if source else "tuning"  # a dict's: SearchSpace.default_name()
    kt = values.get("engine") == "keras_tuner"  # whose sampler may be null (removed), see _engine
    sampler = _typed(raw.get("sampler") or "tpe" if kt else raw.get("sampler", "tpe"), S.SAMPLERS, "study.sampler",
                     errs)
    pruner = _typed(raw.get("pruner", S.DEFAULT_PRUNER), S.PRUNERS, "study.pruner", errs)
    if pruner is not None and len(objectives) > 1 and pruner["type"] != "none":
        if "pruner" in raw:
            errs.add("study.pruner", "Optuna cannot prune a multi-objective study", received=pruner["type"],
                     fix="set pruner: none, or keep one objective")
        else:
            pruner = {"type": "none"}
    if sampler is not None and sampler["type"] == "grid":
        _check_grid(specs, errs)
    enqueue = _enqueue(raw.get("enqueue"), specs, keys, broken, errs, define_by_run)
    stop_after = _stop_after(raw.get("stop_after"), objectives, errs)
    tuner = _engine(raw, values, objectives, pruner, errs)
    if tuner is not None:
        sampler, pruner = {"type": "tpe"}, {"type": "none"}  # not used by KerasTuner (and not written back)
    else:  # every option of both, checked now: reported with the rest of the space, never one run at a time
        if sampler is not None:
            _optuna_options(sampler, "sampler", "study.sampler", errs)
        if pruner is not None:
            _optuna_options(pruner, "pruner", "study.pruner", errs)
    return StudySpec(sampler=sampler or {"type": "tpe"}, pruner=pruner or dict(S.DEFAULT_PRUNER), enqueue=enqueue,
                     tuner=tuner, stop_after=stop_after, **values)


def _stop_after(raw: Any, objectives: tuple[Objective, ...], errs: _Errors) -> dict[str, Any] | None:
    """``study.stop_after``: a number of trials, or ``{trials, seconds, share}``; null (the default) never stops."""
    if raw is None:
        return None
    if len(objectives) > 1:
        errs.add("study.stop_after", "stops when the best value stops improving: a study with several objectives "
                 "has no single best", received=raw, fix="remove study.stop_after, or keep one objective")
        return None
    if not isinstance(raw, Mapping):
        raw = {"trials": raw}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        path = f"study.stop_after.{name}" if name != "trials" or len(raw) > 1 else "study.stop_after"
        if name not in S.STOP_AFTER:
            _unknown(errs, f"study.stop_after.{name}", name, list(S.STOP_AFTER), where="study.stop_after")
            continue
        checked = scalar(S.STOP_AFTER[name], value, path, errs)
        if checked is not _BAD and checked is not None:
            out[name] = checked
    return out or None


def _engine(raw: Mapping[str, Any], values: Mapping[str, Any], objectives: tuple[Objective, ...],
            pruner: dict[str, Any] | None, errs: _Errors) -> dict[str, Any] | None:
    """``study.tuner`` with every option checked, for ``engine: keras_tuner``; ``None`` for the Optuna engine.

    The KerasTuner engine runs one trial at a time on one Keras metric, and has no sampler, pruner or baselines:
    asking for one of those is an error naming the key, not a silent no-op.
    """
    if values.get("engine", "optuna") != "keras_tuner":
        if "tuner" in raw:
            errs.add("study.tuner", "a tuner is used only by the KerasTuner engine", received=raw["tuner"],
                     fix="set study.engine: keras_tuner, or remove study.tuner (Optuna uses study.sampler)")
        return None
    if raw.get("sampler") is not None:  # null removes it: `--set study.sampler=null` switches a space over
        errs.add("study.sampler", "the keras_tuner engine has no Optuna sampler", received=raw["sampler"],
                 fix="choose the KerasTuner tuner with study.tuner (hyperband, random, bayesian) and remove "
                     "the sampler (--set study.sampler=null), or set study.engine: optuna")
    if "pruner" in raw and pruner is not None and pruner["type"] != "none":
        errs.add("study.pruner", "the keras_tuner engine has no Optuna pruner (Hyperband stops trials itself)",
                 received=raw["pruner"], fix="remove it (--set study.pruner=null), or set study.engine: optuna")
    if raw.get("enqueue"):
        errs.add("study.enqueue", "KerasTuner's tuners cannot run baseline configurations first",
                 received=f"{len(raw['enqueue'])} {'entry' if len(raw['enqueue']) == 1 else 'entries'}",
                 fix="remove them (--set study.enqueue=[]), or set study.engine: optuna")
    if values.get("n_jobs", 1) > 1:
        errs.add("study.n_jobs", "the keras_tuner engine runs one trial at a time", received=values["n_jobs"],
                 fix="remove it (tuning run --workers N runs several KerasTuner searches into one study)")
    if len(objectives) > 1:
        errs.add("objective", "the keras_tuner engine optimizes one objective",
                 received=[o.metric for o in objectives], fix="keep one objective, or set study.engine: optuna")
    elif objectives and objectives[0].metric in MEASURED_OBJECTIVES:
        errs.add("objective.metric", "the keras_tuner engine optimizes a metric Keras reports",
                 received=objectives[0].metric, fix="use val_accuracy, val_loss, accuracy or loss")
    tuner = _typed(raw.get("tuner", "hyperband"), S.TUNERS, "study.tuner", errs)
    if tuner is None:
        return {"type": "hyperband"}
    options = S.TUNER_OPTIONS[tuner["type"]]
    out: dict[str, Any] = {"type": tuner["type"]}
    for name, key in options.items():
        out[name] = key.default
    for name, value in tuner.items():
        path = f"study.tuner.{name}"
        if name == "type":
            continue
        if name not in options:
            _unknown(errs, path, name, list(options) or ["type"], where=f"the {tuner['type']} tuner's options")
            continue
        checked = scalar(options[name], value, path, errs)
        if checked is not _BAD:
            out[name] = checked
    return out


#: Options of a sampler or pruner class the toolkit sets itself, and what the user writes instead.
_SET_BY_TOOLKIT = {
    "seed": "the sampler's seed comes from study.seed (each trial's sampler is seeded from it and the trial "
            "number); set study.seed instead",
    "search_space": "the grid is the space's own values (its lists and stepped ranges); remove it",
    "wrapped_pruner": "write the wrapped pruner as `wrapped: <pruner>` or `wrapped: {type: <pruner>, ...}`",
}
_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "None": "null"}


def _optuna_options(spec: Mapping[str, Any], what: str, path: str, errs: _Errors) -> bool:
    """Check ``study.sampler`` or ``study.pruner`` (``what``) options against its Optuna class: each name is one
    of the class's arguments (a "did you mean" otherwise), each value of the type its signature states, and
    then the class itself is built with them, so Optuna's own checks (``percentile`` in [0, 100]) run now too.

    :func:`tuning.engines.make_sampler` and ``make_pruner`` build the same classes for the study, with the seed
    and the epochs as resources; this check needs neither. Returns whether every option is accepted.
    """
    kind = spec["type"]
    if kind == "optunahub":  # its class is known once the package is loaded: checked when the study is built
        return True
    if kind in ("successive_halving", "hyperband") and "promotion" in spec:  # the toolkit's own option
        checked = scalar(S.Key("str", choices=("continue", "stop")), spec["promotion"], f"{path}.promotion", errs)
        spec = {k: v for k, v in spec.items() if k != "promotion"}
        if checked is _BAD:
            return False
    cls = getattr(optuna.samplers, S.SAMPLER_CLASSES[kind]) if what == "sampler" else \
        getattr(optuna.pruners, S.PRUNER_CLASSES[kind])
    params = {name: p for name, p in inspect.signature(cls).parameters.items()
              if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
    reserved = {"seed", "search_space"} if what == "sampler" else {"wrapped_pruner"}
    allowed = [n for n in params if n not in reserved] + (["wrapped"] if kind == "patient" else [])
    where = f"optuna.{what}s.{cls.__name__}"
    ok = True
    for name, value in spec.items():
        p = f"{path}.{name}"
        if name == "type":
            continue
        if name in reserved:
            errs.add(p, "is set by the toolkit, not an option to write", received=value, fix=_SET_BY_TOOLKIT[name])
            ok = False
        elif name not in allowed:
            _unknown(errs, p, name, allowed or ["type"], where=f"the {kind} {what}'s options")
            ok = False
        elif name == "wrapped":
            wrapped = _typed(value, S.PRUNERS, p, errs)
            ok = wrapped is not None and _optuna_options(wrapped, "pruner", p, errs) and ok
        else:
            problem = _type_problem(params[name].annotation, value)
            if problem:
                number = isinstance(value, str) and _parse_number(value) is not None
                errs.add(p, problem, received=value, fix=f"see {where} for what {name} means" + (
                    " (YAML reads 1e-4 as text: write 1.0e-4)" if number else ""))
                ok = False
    if not ok or kind == "grid":  # the grid sampler's only other argument is its seed
        return ok
    try:
        with warnings.catch_warnings():  # "experimental" and "deprecated" warnings belong to the real study
            warnings.simplefilter("ignore")
            options = {k: v for k, v in spec.items() if k not in ("type", "wrapped")}
            cls(**options, **({"wrapped_pruner": None} if kind == "patient" else {}))
    except (TypeError, ValueError) as exc:
        errs.add(path, f"{where} refuses these options: {exc}", received=dict(spec),
                 fix=f"see {where} for the values it accepts")
        return False
    return True


def _type_problem(annotation: Any, value: Any) -> str | None:
    """What is wrong with ``value`` for an argument annotated ``annotation`` (``"int | None"``, ``float``), or
    None; only plain types are checked (Optuna checks the others when the class is built)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = {t.strip() for t in text.split("|")}
    if any(t.startswith("Callable") for t in parts):
        return None if value is None else "takes a Python function, which a search space cannot hold"
    if not parts or not parts <= set(_KINDS):
        return None
    if value is None:
        accepted = "None" in parts
    elif isinstance(value, bool):
        accepted = "bool" in parts
    elif isinstance(value, int):
        accepted = bool(parts & {"int", "float"})
    elif isinstance(value, float):
        accepted = "float" in parts
    else:
        accepted = isinstance(value, str) and "str" in parts
    order = [k for k in _KINDS if k in parts]
    return None if accepted else f"must be {' or '.join(_KINDS[k] for k in order)}"


def _check_grid(specs: dict[str, AnySpec], errs: _Errors) -> None:
    for path, s in specs.items():
        inner = s.specs if isinstance(s, PerLayer) else (s,)
        if any(isinstance(x, Searched) and x.grid_values() is None for x in inner):
            errs.add(path, "the grid sampler needs a step on every float range", received=s.to_yaml(),
                     fix="add `step:` to the range, list the values, or use another sampler")


# ----------------------------------------------------------------------------------------------- enqueue


def _enqueue(raw: Any, specs: dict[str, AnySpec], keys: Mapping[str, S.Key], broken: set[str],
             errs: _Errors, define_by_run: bool = False) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        errs.add("study.enqueue", "must be a list of mappings (parameter name: value)", received=raw,
                 fix="write enqueue: [{model.depth: 2, train.learning_rate: 0.001}]")
        return ()
    names = list(parameter_names(specs)) + [p for p, s in specs.items() if not isinstance(s, Fixed)]
    depth_spec = specs.get("model.depth")
    deepest = largest_value(depth_spec)
    out: list[dict[str, Any]] = []
    for k, entry in enumerate(raw):
        base = f"study.enqueue[{k}]"
        if not isinstance(entry, Mapping):
            errs.add(base, "must be a mapping of parameter names to values", received=entry,
                     fix="write {model.depth: 2, model.width: [32, 64]}")
            continue
        params: dict[str, Any] = {}
        depth = depth_spec.value if isinstance(depth_spec, Fixed) else None
        if "model.depth" in entry and depth_spec is not None:
            got = _one(params, "model.depth", entry["model.depth"], depth_spec, keys["model.depth"],
                       f"{base}.model.depth", errs)
            if got is not _BAD:
                depth = got
        for key, value in entry.items():
            path = f"{base}.{key}"
            if key == "model.depth":
                continue
            if not isinstance(key, str):
                errs.add(path, "a parameter name must be a string", received=key, fix="write model.depth, ...")
                continue
            layer = re.fullmatch(r"(.+)\.(\d+)", key)
            if key in broken or (layer and layer[1] in broken) or ("model" in broken and key.startswith("model.")):
                continue
            s = specs.get(key)
            if isinstance(s, PerLayer):
                values = list(value) if isinstance(value, list | tuple) else None
                if values is None:
                    n = depth if depth is not None else deepest
                    for i in range(1, (n or 0) + 1):
                        if _layer(params, key, i, value, s, keys[key], path, errs) is _BAD:
                            break
                elif not values:
                    errs.add(path, "an empty list gives no layer", received=[], fix="give one value per layer")
                elif depth is not None and len(values) != depth:
                    errs.add(path, f"gives {len(values)} value(s) but the entry's depth is {depth}",
                             received=value, fix="give one value per layer")
                elif deepest is not None and len(values) > deepest:
                    errs.add(path, f"gives {len(values)} value(s) but model.depth is at most {deepest}",
                             received=value, fix="give one value per layer")
                else:
                    for i, v in enumerate(values, 1):
                        _layer(params, key, i, v, s, keys[key], f"{path}[{i - 1}]", errs)
            elif s is not None:
                if isinstance(value, list | tuple) and keys[key].per_layer:
                    errs.add(path, f"{key} is one value shared by every layer in this space", received=value,
                             fix=f"give one value, or write `{key.split('.')[-1]}: {{per_layer: ...}}` in the space")
                    continue
                _one(params, key, value, s, keys[key], path, errs)
            elif layer and isinstance(specs.get(layer[1]), PerLayer):
                i = int(layer[2])
                limit = depth if depth is not None else deepest
                if i < 1 or (limit is not None and i > limit):
                    errs.add(path, f"layer {i} does not exist: the model has {limit} layer(s)", received=value,
                             fix=f"use layers 1 to {limit}")
                    continue
                _layer(params, layer[1], i, value, specs[layer[1]], keys[layer[1]], path, errs)  # type: ignore[arg-type]
            elif define_by_run and not key.startswith(("model.", "train.")):
                # A hypermodel's own hyperparameter: known only once it builds (`tuning validate` checks it).
                if isinstance(value, Mapping | list | tuple) or value is None:
                    errs.add(path, "a hyperparameter's value must be a single number, string or boolean",
                             received=value, fix="write e.g. units_0: 64")
                else:
                    params[key] = value
            else:
                guess = _did_you_mean(key, names)
                errs.add(path, "unknown parameter", fix=(f"did you mean `{guess}`? " if guess else "")
                         + "parameters of this space: " + (", ".join(names) or "none"))
        out.append(params)
    return tuple(out)


def _layer(params: dict[str, Any], name: str, i: int, value: Any, s: PerLayer, key: S.Key, path: str,
           errs: _Errors) -> Any:
    if s.mode == "layers" and i > len(s.specs):
        errs.add(path, f"layer {i} has no spec in {name}.layers", received=value, fix="give fewer layers")
        return _BAD
    return _one(params, f"{name}.{i}", value, s.spec_for(i), key, path, errs)


def _one(params: dict[str, Any], name: str, value: Any, s: AnySpec, key: S.Key, path: str, errs: _Errors) -> Any:
    if name in params:
        errs.add(path, f"{name} is given twice", received=value, fix="give each parameter once")
        return _BAD
    checked = scalar(key, value, path, errs)
    if checked is _BAD:
        return _BAD
    if isinstance(s, Fixed):
        if checked != s.value or type(checked) is not type(s.value):
            errs.add(path, f"is fixed at {s.value!r} in this space", received=value,
                     fix="remove it from the entry, or make it searchable in the space")
            return _BAD
        return checked
    assert isinstance(s, Searched)
    if not s.contains(checked):
        errs.add(path, f"lies outside the space: must be {s.allowed()}", received=value,
                 fix="pick a value inside the space, or widen the space")
        return _BAD
    params[name] = checked
    return checked


def parameter_names(specs: Mapping[str, AnySpec]) -> dict[str, Searched]:
    """Every Optuna parameter the space can produce, by name (per-layer up to the deepest model), in order."""
    deepest = largest_value(specs.get("model.depth")) or 0
    out: dict[str, Searched] = {}
    for path, s in specs.items():
        if isinstance(s, Searched):
            out[path] = s
        elif isinstance(s, PerLayer):
            for i in range(1, deepest + 1):
                if s.mode == "layers" and i > len(s.specs):
                    break
                inner = s.spec_for(i)
                if isinstance(inner, Searched):
                    out[f"{path}.{i}"] = inner
    return out
