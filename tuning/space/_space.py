"""The :class:`SearchSpace`: a validated space that samples trial configurations through Optuna.

Example:
    >>> import optuna
    >>> space = SearchSpace.from_dict({"model": {"family": "mlp", "depth": {"low": 1, "high": 3},
    ...                                          "width": {"per_layer": [50, 500]}},
    ...                                "train": {"epochs": 2}})
    >>> cfg = space.suggest(optuna.trial.FixedTrial({"model.depth": 2, "model.width.1": 50, "model.width.2": 500}))
    >>> cfg.model.width
    (50, 500)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from optuna.distributions import BaseDistribution

from tuning import models
from tuning.config import Augmentation, TrainConfig, TrialConfig
from tuning.errors import SpaceError
from tuning.records import MEASURED_OBJECTIVES, space_hash
from tuning.space import _parse, _yaml
from tuning.space._sections import DataSpec, Objective, StudySpec
from tuning.space._specs import AnySpec, Fixed, PerLayer, Searched, format_value


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space: data, model and training specs, objectives and study settings.

    Build one with :meth:`from_yaml` or :meth:`from_dict`; ``specs`` maps each model/train key path
    (``model.width``, ``train.augmentation.rotation``) to a ``Fixed``, ``Searched`` or ``PerLayer`` spec.
    Two spaces are equal when everything but ``source`` is equal.

    Example:
        >>> space = SearchSpace.from_dict({"model": {"family": "cnn"}, "train": {"epochs": 2}})
        >>> space.study.name == space.default_name(), space.objectives[0].metric
        (True, 'val_accuracy')
    """

    data: DataSpec
    specs: Mapping[str, AnySpec]
    objectives: tuple[Objective, ...]
    study: StudySpec
    source: str | None = field(default=None, compare=False)
    _raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------------------------------- building

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> SearchSpace:
        """Load and validate a YAML file (safe loader); raise :class:`SpaceError` listing every problem.

        Example:
            >>> SearchSpace.from_yaml("search_spaces/mnist_quick.yaml")  # doctest: +SKIP
        """
        return cls.from_dict(_yaml.load(path), source=os.fspath(path))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str | None = None) -> SearchSpace:
        """Validate a dict with the YAML structure; ``source`` names where it came from in messages.

        Without ``study.name``, the study is named after ``source``'s stem, or for a dict after its sections
        (:meth:`default_name`).

        Example:
            >>> SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 1}}).family
            'mlp'
        """
        parts = _parse.parse(d, source=source)
        space = cls(parts.data, parts.specs, parts.objectives, parts.study, source=source, _raw=_plain(d))
        study = d.get("study")
        if source is None and not (isinstance(study, Mapping) and study.get("name") is not None):
            space = replace(space, study=replace(space.study, name=space.default_name()))
        return space

    def with_overrides(self, assignments: Sequence[str]) -> SearchSpace:
        """A new space with ``key.path=value`` assignments applied (values read as YAML), re-validated.

        An override wins over the enqueued baselines: ``--set train.epochs=1`` removes ``train.epochs`` from every
        ``study.enqueue`` entry (an entry left empty is dropped), so a quick run of a shipped space just works.

        Example:
            >>> space = SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 1}})
            >>> space.with_overrides(["train.epochs=3", "model.width=[64, 128]"]).specs["train.epochs"]
            Fixed(value=3)
        """
        raw = copy.deepcopy(self._raw) if self._raw is not None else self.to_dict()
        errors: list[SpaceError] = []
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            key = key.strip()
            if not sep or not key:
                errors.append(SpaceError("--set", "expects key.path=value", received=assignment,
                                         fix="write e.g. --set train.epochs=3"))
                continue
            try:
                value = _yaml.load_value(text, key)
            except SpaceError as e:
                errors.append(e)
                continue
            parts = key.split(".")
            node: Any = raw
            for i, part in enumerate(parts[:-1]):
                nxt = node.get(part)
                if nxt is None:
                    nxt = node[part] = {}
                if not isinstance(nxt, dict):
                    where = ".".join(parts[: i + 1])
                    errors.append(SpaceError(key, f"cannot set it: {where} is not a mapping", received=nxt,
                                             fix=f"set {where} itself, e.g. --set {where}={{...}}"))
                    break
                node = nxt
            else:
                node[parts[-1]] = value
        if errors:
            raise SpaceError.collect(errors, source=self.source)
        _drop_overridden_from_enqueue(raw, [a.partition("=")[0].strip() for a in assignments])
        return SearchSpace.from_dict(raw, source=self.source)

    # ------------------------------------------------------------------------------------------- reading

    @property
    def family(self) -> str:
        """The model family's name: ``cnn``, ``mlp``, ``hypermodel`` or another registered one."""
        spec = self.specs["model.family"]
        assert isinstance(spec, Fixed)
        return spec.value

    @property
    def model_family(self) -> models.Family:
        """The :class:`~tuning.models.Family` of :attr:`family` (``cnn``, ``mlp``, ``hypermodel``, ...)."""
        return models.get(self.family)

    @property
    def directions(self) -> list[str]:
        """The objectives' directions in order, as ``optuna.create_study(directions=...)`` takes them."""
        return [o.direction for o in self.objectives]

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every Optuna parameter the space can produce (per-layer ones up to the deepest model), in order.

        Example:
            >>> s = SearchSpace.from_dict({"model": {"family": "mlp", "depth": [1, 2],
            ...                                      "width": {"per_layer": [8, 16]}}, "train": {"epochs": 1}})
            >>> list(s.distributions())
            ['model.depth', 'model.width.1', 'model.width.2']
        """
        return {name: s.distribution for name, s in _parse.parameter_names(self.specs).items()}

    def max_epochs(self) -> int:
        """The most epochs a trial trains: ``train.epochs``' upper bound (KerasTuner Hyperband's ``max_epochs``).

        Example:
            >>> SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": [2, 8, 4]}}).max_epochs()
            8
        """
        spec = self.specs["train.epochs"]
        if isinstance(spec, Fixed):
            return int(spec.value)
        assert isinstance(spec, Searched)
        values = spec.grid_values()
        return int(max(values) if values else spec.distribution.high)  # type: ignore[attr-defined]

    def early_stopping_monitor(self) -> tuple[str, str]:
        """What ``train.early_stopping`` watches: the first objective and its direction, or ``val_loss`` when
        that objective is not a metric Keras reports each epoch (``params``, ``train_seconds``).

        Example:
            >>> SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 1}}).early_stopping_monitor()
            ('val_accuracy', 'maximize')
        """
        objective = self.objectives[0]
        if objective.metric in MEASURED_OBJECTIVES:
            return ("val_loss", "minimize")
        return (objective.metric, objective.direction)

    def default_name(self, prefix: str = "tuning") -> str:
        """The study name of a space given as a dict without ``study.name``: ``prefix`` and a short hash of its
        ``data``, ``model``, ``train`` and ``objective`` sections (those a resumed study must keep), so that two
        different dict spaces are two studies and running the same one again resumes its study.

        Example:
            >>> space = SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 1}})
            >>> space.study.name == space.default_name(), space.default_name().startswith("tuning-")
            (True, True)
            >>> space.default_name() == SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 2}}
            ...                                                ).default_name()
            False
        """
        return f"{prefix}-{space_hash(self.to_dict())[:8]}"

    def to_dict(self) -> dict[str, Any]:
        """The normalised space (every default filled in) as plain JSON/YAML data; ``from_dict`` reads it back.

        Example:
            >>> s = SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 1}})
            >>> SearchSpace.from_dict(s.to_dict()) == s
            True
        """
        model = {p.split(".", 1)[1]: s.to_yaml() for p, s in self.specs.items() if p.startswith("model.")}
        train: dict[str, Any] = {}
        aug: dict[str, Any] = {}
        for p, s in self.specs.items():
            if p.startswith("train.augmentation."):
                aug[p.rsplit(".", 1)[1]] = s.to_yaml()
            elif p.startswith("train."):
                train[p.split(".", 1)[1]] = s.to_yaml()
        train["augmentation"] = aug
        return copy.deepcopy({
            "data": self.data.to_dict(),
            "model": model,
            "train": train,
            "objective": [o.to_dict() for o in self.objectives],
            "study": self.study.to_dict(),
        })

    def enqueued(self) -> list[dict[str, Any]]:
        """The ``study.enqueue`` entries as Optuna parameter dicts, for ``study.enqueue_trial``.

        Example:
            >>> s = SearchSpace.from_dict({"model": {"family": "mlp", "depth": [1, 2],
            ...     "width": {"per_layer": [8, 16]}}, "train": {"epochs": 1},
            ...     "study": {"enqueue": [{"model.depth": 2, "model.width": [8, 16]}]}})
            >>> s.enqueued()
            [{'model.depth': 2, 'model.width.1': 8, 'model.width.2': 16}]
        """
        return [dict(e) for e in self.study.enqueue]

    def grid(self) -> dict[str, list[Any]]:
        """The search space for ``optuna.samplers.GridSampler``; :class:`SpaceError` for a range without step.

        Example:
            >>> SearchSpace.from_dict({"model": {"family": "mlp", "depth": {"low": 1, "high": 2}},
            ...                        "train": {"epochs": 1}}).grid()
            {'model.depth': [1, 2]}
        """
        out: dict[str, list[Any]] = {}
        errors: list[SpaceError] = []
        for name, s in _parse.parameter_names(self.specs).items():
            values = s.grid_values()
            if values is None:
                errors.append(SpaceError(name, "a grid needs a step on every float range", received=s.to_yaml(),
                                         fix="add `step:` to the range, or list the values"))
            else:
                out[name] = values
        if errors:
            raise SpaceError.collect(errors, source=self.source)
        return out

    # ------------------------------------------------------------------------------------------- sampling

    def suggest(self, trial: Any) -> TrialConfig:
        """Sample every active parameter through ``trial`` (depth first) and return the trial's configuration.

        Layers beyond the sampled depth are neither sampled nor recorded. Works with ``optuna.Trial`` and
        ``optuna.trial.FixedTrial``.

        Example:
            >>> import optuna
            >>> s = SearchSpace.from_dict({"model": {"family": "mlp", "depth": [1, 2]}, "train": {"epochs": 1}})
            >>> s.suggest(optuna.trial.FixedTrial({"model.depth": 1})).model.depth
            1
        """
        params: dict[str, Any] = {}

        def value(path: str, layer: int | None = None) -> Any:
            spec = self.specs[path]
            name = path
            if isinstance(spec, PerLayer):
                assert layer is not None
                spec, name = spec.spec_for(layer), f"{path}.{layer}"
            if isinstance(spec, Fixed):
                return spec.value
            v = spec.suggest(trial, name)
            params[name] = v
            return v

        model = self.model_family.resolve(_Draw(self.specs, value, trial))
        train = TrainConfig(
            epochs=value("train.epochs"),
            batch_size=value("train.batch_size"),
            optimizer=value("train.optimizer"),
            learning_rate=value("train.learning_rate"),
            momentum=value("train.momentum"),
            schedule=value("train.schedule"),
            lr_scaling=value("train.lr_scaling"),
            lr_reference_batch=value("train.lr_reference_batch"),
            augmentation=Augmentation(
                rotation=value("train.augmentation.rotation"),
                shift=value("train.augmentation.shift"),
                zoom=value("train.augmentation.zoom"),
                flip=value("train.augmentation.flip"),
            ),
            precision=value("train.precision"),
            chance_epochs=value("train.chance_epochs"),
            early_stopping=value("train.early_stopping"),
        )
        return TrialConfig(model=model, train=train, params=params)

    def config_from_params(self, params: Mapping[str, Any]) -> TrialConfig:
        """The configuration a finished trial trained, from its ``params`` (e.g. to retrain the best one).

        Example:
            >>> s = SearchSpace.from_dict({"model": {"family": "mlp", "depth": [1, 2]}, "train": {"epochs": 1}})
            >>> s.config_from_params({"model.depth": 2}).model.width
            (128, 128)
        """
        import optuna

        missing = [name for name in self.distributions() if name not in params]
        try:
            return self.suggest(optuna.trial.FixedTrial(dict(params)))
        except ValueError:
            needed = [n for n in missing if n in _active(self, params)]
            raise SpaceError(needed[0] if needed else "", "missing from the parameters", received=dict(params),
                             fix="pass a value for every active parameter (a trial's params)") from None

    def describe(self) -> str:
        """A readable table of the space for ``tuning validate``: parameters, kinds, ranges; then fixed values.

        Example:
            >>> print(SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 1}}).describe())
            ... # doctest: +ELLIPSIS
            space tuning-...: mlp, 0 parameters, objective val_accuracy (maximize)
            ...
        """
        deepest = _parse.largest_value(self.specs.get("model.depth")) or 1
        rows: list[tuple[str, str, str]] = []
        fixed: list[str] = []
        for path, s in self.specs.items():
            if isinstance(s, Searched):
                rows.append((path, s.kind(), s.values_text()))
            elif isinstance(s, Fixed):
                fixed.append(f"{path}={format_value(s.value)}")
            elif s.mode == "per_layer":
                inner = s.specs[0]
                if isinstance(inner, Searched):
                    name = f"{path}.1" if deepest == 1 else f"{path}.{{1..{deepest}}}"
                    rows.append((name, inner.kind(), f"{inner.values_text()}   (per layer)"))
                else:
                    fixed.append(f"{path}={format_value(inner.value)} (every layer)")
            else:
                used = s.specs[:deepest]
                if all(isinstance(x, Fixed) for x in used):
                    fixed.append(f"{path}=[{', '.join(format_value(x.value) for x in used)}] (per layer)")  # type: ignore
                    continue
                for i, x in enumerate(used, 1):
                    if isinstance(x, Searched):
                        rows.append((f"{path}.{i}", x.kind(), f"{x.values_text()}   (layer {i})"))
                    else:
                        fixed.append(f"{path}.{i}={format_value(x.value)}")
        objectives = ", ".join(f"{o.metric} ({o.direction})" for o in self.objectives)
        where = f" ({self.source})" if self.source else ""
        n = len(rows)
        lines = [f"space {self.study.name}{where}: {self.family}, {n} parameter{'s' if n != 1 else ''}, "
                 f"objective{'s' if len(self.objectives) > 1 else ''} {objectives}"]
        if rows:
            w0 = max(len("parameter"), *(len(r[0]) for r in rows)) + 2
            w1 = max(len("kind"), *(len(r[1]) for r in rows)) + 2
            lines.append(f"  {'parameter':<{w0}}{'kind':<{w1}}values")
            lines += [f"  {a:<{w0}}{b:<{w1}}{c}" for a, b, c in rows]
        line = "  fixed:"
        for i, item in enumerate(fixed):
            item += "," if i < len(fixed) - 1 else ""
            if len(line) + 1 + len(item) > 110 and line.strip() != "fixed:":
                lines.append(line)
                line = " " * 8
            line += " " + item
        lines.append(line)
        d = self.data
        size = f", {d.train_size} training images" if d.train_size is not None else ""
        lines.append(f"  data: {d.dataset}{size}, validation split {format_value(d.validation_split)}")
        st = self.study
        trials = f"{st.n_trials} trial{'s' if st.n_trials != 1 else ''}"
        extra = f", timeout {format_value(st.timeout)} s" if st.timeout is not None else ""
        n_enq = len(st.enqueue)
        if st.tuner is not None:
            extra_option = [f"max_epochs {self.max_epochs()} from train.epochs"] if st.tuner["type"] == "hyperband" \
                else []  # train.epochs is then Hyperband's, not a parameter
            how = f"engine keras_tuner, tuner {_with_options(st.tuner, extra_option)}"
        else:  # with their options: the default pruner and `pruner: median` differ only there
            how = f"sampler {_with_options(st.sampler)}, pruner {_with_options(st.pruner)}"
        lines.append(f"  study: {how}, {trials}{extra}, "
                     f"seed {st.seed if st.seed is not None else 'random'}, "
                     f"{n_enq} enqueued configuration{'s' if n_enq != 1 else ''}")
        return "\n".join(lines)


def _with_options(spec: Mapping[str, Any], extra: list[str] | None = None) -> str:
    """A sampler, pruner or tuner and the options the space gave it, as ``describe`` prints it.

    Example:
        >>> _with_options({"type": "median", "n_startup_trials": 2})
        'median (n_startup_trials 2)'
    """
    options = [f"{k} {'null' if v is None else _with_options(v) if isinstance(v, Mapping) else format_value(v)}"
               for k, v in spec.items() if k != "type"]  # a mapping: the patient pruner's wrapped pruner
    options += extra or []
    return f"{spec['type']} ({', '.join(options)})" if options else str(spec["type"])


class _Draw:
    """A family's view of one trial's values (:class:`tuning.models.Draw`): keys without ``model.``."""

    def __init__(self, specs: Mapping[str, AnySpec], value: Callable[..., Any], trial: Any) -> None:
        self.specs = specs
        self.value = value
        self.trial = trial

    def __call__(self, key: str, layer: int | None = None) -> Any:
        return self.value(f"model.{key}", layer)

    def layers(self, key: str, depth: int) -> tuple[Any, ...]:
        path = f"model.{key}"
        if isinstance(self.specs[path], PerLayer):
            return tuple(self.value(path, i) for i in range(1, depth + 1))
        return (self.value(path),) * depth


def _active(space: SearchSpace, params: Mapping[str, Any]) -> list[str]:
    """The parameter names a trial with ``params`` would sample (per-layer ones up to its depth)."""
    depth = params.get("model.depth", _parse.largest_value(space.specs.get("model.depth")))
    names = []
    for name in space.distributions():
        layer = name.rsplit(".", 1)[-1]
        if name.count(".") == 2 and layer.isdigit() and depth is not None and int(layer) > depth:
            continue
        names.append(name)
    return names


def _plain(d: Any) -> Any:
    """A deep copy of ``d`` with every mapping a dict and every tuple a list."""
    if isinstance(d, Mapping):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, list | tuple):
        return [_plain(v) for v in d]
    return d


def _drop_overridden_from_enqueue(raw: dict[str, Any], keys: Sequence[str]) -> None:
    """Remove overridden parameters from the enqueue entries.

    ``model.width`` covers ``model.width.2``, and ``train.learning_rate.high`` covers ``train.learning_rate``.
    """
    study = raw.get("study")
    entries = study.get("enqueue") if isinstance(study, dict) else None
    if not isinstance(entries, list) or any(k == "study.enqueue" or k == "study" for k in keys):
        return
    kept = []
    for entry in entries:
        if not isinstance(entry, dict):
            kept.append(entry)
            continue
        entry = {p: v for p, v in entry.items() if not any(_overlaps(str(p), k) for k in keys)}
        if entry:
            kept.append(entry)
    study["enqueue"] = kept


def _overlaps(param: str, key: str) -> bool:
    return param == key or param.startswith(key + ".") or key.startswith(param + ".")
