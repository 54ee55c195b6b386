"""The Optuna engine (``study.engine: optuna``, the default): Optuna's sampler and pruner pick the configurations.

The sampler and pruner come from ``study.sampler`` and ``study.pruner`` with their options (:func:`make_sampler`,
:func:`make_pruner`); each trial's sampler is seeded from the study seed and the trial number
(:class:`~tuning.engines._sampling.TrialSeededSampler`). Each trial samples its configuration through
``space.suggest(trial)``; a KerasTuner hypermodel's ``hp`` values are drawn through the trial as its build
declares them (:class:`tuning.hypermodel.OptunaHyperParameters`).

Example:
    >>> engine = OptunaEngine(space, dataset)  # doctest: +SKIP
    >>> study = optuna.create_study(sampler=engine.sampler(), pruner=engine.pruner())  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import optuna

from tuning import records
from tuning.engines._base import Engine
from tuning.engines._promotion import Promotions, RungPruner
from tuning.engines._sampling import TrialSeededSampler
from tuning.errors import SpaceError
from tuning.observers import COMPLETE, PRUNED, TrialOutcome
from tuning.schema import PRUNER_CLASSES, SAMPLER_CLASSES
from tuning.trial import TrialPlan

if TYPE_CHECKING:
    from tuning.space import SearchSpace

__all__ = ["OptunaEngine", "make_pruner", "make_sampler", "rung_pruner"]


class OptunaEngine(Engine):
    """Optuna's sampler (``study.sampler``) and pruner (``study.pruner``) pick and stop the trials.

    With ``study.pruner`` ``successive_halving`` or ``hyperband`` (``promotion: continue``, their default), a trial
    stopped at a rung is paused, not dropped, and a later trial continues it from its checkpoint once it ranks
    among the best of its rung (:mod:`tuning.engines._promotion`).
    """

    name = "optuna"

    def __init__(self, space: SearchSpace, data: Any, *, build_fn: Any = None, hypermodel: Any = None) -> None:
        super().__init__(space, data, build_fn=build_fn, hypermodel=hypermodel)
        self._rungs = rung_pruner(space)
        self.promotions: Promotions | None = None
        self.study: optuna.Study | None = None
        self._lock = threading.Lock()  # threads (n_jobs > 1) promote one at a time

    def sampler(self) -> optuna.samplers.BaseSampler:
        space = self.space
        if space.study.sampler["type"] in ("qmc", "optunahub"):  # QMC's seed is its scrambling; a hub sampler may
            return make_sampler(space, space.study.seed)      # keep its state in memory: one for the whole study
        return TrialSeededSampler(lambda seed: make_sampler(space, seed), space.study.seed)

    def pruner(self) -> optuna.pruners.BasePruner:
        return self._rungs or make_pruner(self.space)

    def start(self, study: optuna.Study) -> None:
        self.study = study
        if self._rungs is not None:
            self.promotions = Promotions(self._rungs, study.study_name)

    def has_next(self) -> bool:
        if self.promotions is not None and self.study is not None:
            with self._lock:
                self._queue_promotion(self.study)
        return True

    def plan(self, trial: optuna.Trial) -> TrialPlan:
        config = self.space.suggest(trial)
        if self.hypermodel is None:
            plan = TrialPlan(config, build_fn=self.build_fn)
        else:
            from tuning.hypermodel import OptunaHyperParameters

            hp, hypermodel = OptunaHyperParameters(trial), self.hypermodel
            plan = TrialPlan(
                config,
                build_fn=lambda _config: hypermodel.build(hp),
                fit_fn=lambda model, *args, **kwargs: hypermodel.fit(hp, model, *args, **kwargs),
            )
        if self.promotions is None:
            return plan
        start, attrs = self.promotions.start_of(trial.study, trial)
        return replace(plan, start=start, save_to=self.promotions.path(trial.number), user_attrs=attrs)

    def on_pruned(self, trial: optuna.Trial, epoch: int, metric: str, value: float) -> str:
        if self._rungs is None:
            return super().on_pruned(trial, epoch, metric, value)
        trial.set_user_attr(records.PAUSED_AT, epoch)
        return (f"paused at epoch {epoch}, a rung of {self.space.study.pruner['type']} ({metric} {value:.4f}): a later "
                f"trial continues it from its checkpoint if it ranks in the top 1/{self._rungs.eta} of its rung")

    def trial_ended(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        if self.promotions is None:
            return
        if outcome.state in (COMPLETE, PRUNED):
            self.promotions.finished(trial, paused=records.PAUSED_AT in trial.user_attrs)
        else:  # failed or interrupted: its retry continues from the same checkpoint
            self.promotions.path(trial.number).unlink(missing_ok=True)

    def close(self, finished: bool) -> None:
        if self.promotions is not None and finished:
            self.promotions.clean_up()

    def _queue_promotion(self, study: optuna.Study) -> None:
        """Queue the next trial as the continuation of a paused trial that now ranks in its rung's top (asked with
        the study's lock held: no other worker queues the same one)."""
        if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            return  # ask() pops that one first (a retry, a baseline, a promotion queued earlier)
        parent = self.promotions.next_promotion(study) if self.promotions is not None else None
        if parent is not None:
            study.enqueue_trial(parent.params, user_attrs={records.CONTINUES: parent.number})


def rung_pruner(space: SearchSpace) -> RungPruner | None:
    """The rung pruner of ``study.pruner`` ``successive_halving``/``hyperband`` with ``promotion: continue``
    (their default), with Optuna's defaults for their options; None for any other pruner.

    Example:
        >>> from tuning.space import SearchSpace
        >>> space = SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 9},
        ...                                "study": {"pruner": {"type": "hyperband"}}})
        >>> pruner = rung_pruner(space)
        >>> pruner.rungs(0), pruner.rungs(1), pruner.brackets
        ([1, 3], [3], 3)
    """
    spec = dict(space.study.pruner)
    kind = spec.get("type")
    if kind not in ("successive_halving", "hyperband") or spec.get("promotion", "continue") != "continue":
        return None
    make_pruner(space)  # Optuna checks the options
    max_epochs = space.max_epochs()
    min_resource = int(spec.get("min_resource") or 1) if spec.get("min_resource") != "auto" else 1
    if kind == "successive_halving":
        eta = int(spec.get("reduction_factor", 4))
        min_resource *= eta ** int(spec.get("min_early_stopping_rate", 0))
        return RungPruner(min_resource=min_resource, eta=eta, max_epochs=max_epochs, brackets=1)
    eta = int(spec.get("reduction_factor", 3))
    top = spec.get("max_resource", max_epochs)
    top = max_epochs if top == "auto" else int(top)
    brackets = int(math.log(top / min_resource, eta) + 1e-9) + 1 if top > min_resource else 1
    return RungPruner(min_resource=min_resource, eta=eta, max_epochs=max_epochs, brackets=brackets)


def make_sampler(space: SearchSpace, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler named in ``study.sampler`` with its options, seeded with ``seed``.

    ``{optunahub: samplers/<name>, ...}`` loads that OptunaHub package (once per process) and builds its sampler
    class with the options.
    """
    spec = dict(space.study.sampler)
    kind = spec.pop("type")
    if kind == "optunahub":
        cls = hub_class(spec.pop("package", None), spec.pop("class", None), optuna.samplers.BaseSampler,
                        "study.sampler")
        accepts_seed = "seed" in inspect.signature(cls).parameters
        return _construct(cls, spec, "study.sampler", cls.__name__, **({"seed": seed} if accepts_seed else {}))
    if kind not in SAMPLER_CLASSES:
        raise SpaceError(
            "study.sampler", "unknown sampler", received=kind, fix=f"use one of {', '.join(SAMPLER_CLASSES)}"
        )
    cls = getattr(optuna.samplers, SAMPLER_CLASSES[kind])
    if kind == "grid":
        spec.setdefault("search_space", space.grid())
    if kind == "gp":
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise SpaceError(
                "study.sampler", "the gp sampler needs PyTorch, which is not installed",
                received="gp", fix="pip install torch, or use tpe",
            ) from exc
    return _construct(cls, spec, "study.sampler", kind, seed=seed)


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    """The pruner named in ``study.pruner`` with its options (``patient`` wraps the pruner in ``wrapped``).

    Epochs are the resource of ``hyperband`` and ``successive_halving``: unless the space sets them, their
    ``max_resource`` is the largest ``train.epochs`` (Optuna's ``"auto"`` would wait for a first trial to train
    every epoch before pruning anything) and ``min_resource`` is 1 epoch.
    """
    return _make_pruner(dict(space.study.pruner), "study.pruner", space.max_epochs())


def _make_pruner(spec: dict[str, Any], path: str, max_epochs: int | None = None) -> optuna.pruners.BasePruner:
    kind = spec.pop("type")
    if kind == "optunahub":
        cls = hub_class(spec.pop("package", None), spec.pop("class", None), optuna.pruners.BasePruner, path)
        if issubclass(cls, optuna.pruners.HyperbandPruner) and max_epochs:  # epochs as the resource, as below
            spec.setdefault("min_resource", 1)
            spec.setdefault("max_resource", max_epochs)
        return _construct(cls, spec, path, cls.__name__)
    if kind in ("successive_halving", "hyperband"):
        promotion = spec.pop("promotion", "continue")
        if promotion not in ("continue", "stop"):
            raise SpaceError(f"{path}.promotion", "must be continue or stop", received=promotion,
                             fix="continue: a paused trial resumes from its checkpoint once it ranks among the best; "
                                 "stop: Optuna's own pruner, a stopped trial is gone")
    if kind == "hyperband" and max_epochs:
        spec.setdefault("min_resource", 1)
        spec.setdefault("max_resource", max_epochs)
    if kind == "successive_halving":
        spec.setdefault("min_resource", 1)
    if kind not in PRUNER_CLASSES:
        raise SpaceError(path, "unknown pruner", received=kind, fix=f"use one of {', '.join(PRUNER_CLASSES)}")
    cls = getattr(optuna.pruners, PRUNER_CLASSES[kind])
    if kind == "patient":
        wrapped = spec.pop("wrapped", None)
        if isinstance(wrapped, str):
            wrapped = {"type": wrapped}
        spec["wrapped_pruner"] = _make_pruner(dict(wrapped), f"{path}.wrapped", max_epochs) if wrapped else None
        spec.setdefault("patience", 1)
    return _construct(cls, spec, path, kind)


def hub_class(package: Any, name: Any, base: type, path: str) -> type:
    """The ``base`` subclass (a sampler or pruner) of OptunaHub package ``package``: the one named ``name``, or the
    only one it defines.

    Example:
        >>> hub_class("samplers/dehb", None, optuna.samplers.BaseSampler, "study.sampler")  # doctest: +SKIP
        <class 'optunahub_registry.package.samplers.dehb.sampler.DEHBSampler'>

    Raises:
        SpaceError: at ``path``: the package cannot be loaded (not installed, offline, missing requirements) or
            has no such class.
    """
    kind = "sampler" if base is optuna.samplers.BaseSampler else "pruner"
    if not isinstance(package, str) or not package:
        raise SpaceError(path, "an optunahub " + kind + " needs its package", received=package,
                         fix=f"write {{optunahub: {kind}s/<name>}}, e.g. {{optunahub: samplers/auto_sampler}}")
    module = _hub_module(package, path)
    found = {n: c for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, base) and c is not base
             and not c.__module__.startswith("optuna.")}
    if name is not None:
        if name not in found:
            raise SpaceError(f"{path}.class", f"the optunahub package {package} has no {kind} {name!r}",
                             received=name, fix=f"use one of: {', '.join(sorted(found)) or 'none'}")
        return found[name]
    if len(found) != 1:
        raise SpaceError(path, f"the optunahub package {package} defines {len(found) or 'no'} {kind} classes",
                         received=sorted(found), fix="name one with `class:`" if found else
                         f"use a package of {kind}s (https://hub.optuna.org)")
    return next(iter(found.values()))


@functools.cache
def _loaded(package: str) -> Any:
    import optunahub

    return optunahub.load_module(package)


def _hub_module(package: str, path: str) -> Any:
    """The OptunaHub package ``package``, loaded once per process (optunahub caches downloads on disk too)."""
    try:
        import optunahub  # noqa: F401
    except ImportError as exc:
        raise SpaceError(path, "OptunaHub packages need the optunahub library, which is not installed",
                         received=package, fix="pip install optunahub (or pip install 'tuning[hub]')") from exc
    try:
        return _loaded(package)
    except ModuleNotFoundError as exc:  # a requirement of the package
        raise SpaceError(path, f"the optunahub package {package} needs {exc.name or 'a module'}, which is not "
                         "installed", received=package,
                         fix=f"pip install the package's requirements (https://hub.optuna.org/{package}/)") from exc
    except Exception as exc:  # offline, unknown name, rate limit
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise SpaceError(path, f"cannot load the optunahub package {package} ({type(exc).__name__}: {first})",
                         received=package, fix="check its name on https://hub.optuna.org and this machine's access "
                         "to github.com; offline, put the package in optunahub's cache (OPTUNAHUB_CACHE_HOME)") from exc


def _construct(cls: type, options: dict[str, Any], path: str, kind: str, **fixed: Any) -> Any:
    try:
        return cls(**options, **fixed)
    except (TypeError, ValueError) as exc:
        raise SpaceError(
            path, f"the options of {kind} are not accepted by optuna.{cls.__name__} ({exc})",
            received=options, fix=f"see the documentation of optuna {cls.__name__} for its arguments",
        ) from exc
