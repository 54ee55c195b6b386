"""Every key a search space may hold (type, limits, default, whether it can be searched) and every name a key
may take (data sets, optimizers, samplers, pruners, ...): the toolkit's one list of each.

This module imports nothing of the package: the search space (:mod:`tuning.space`), the model families
(:mod:`tuning.models`), training, the data loader and the study all read it, so it sits below all of them.
The ``data``, ``train`` and ``study`` tables are here; each model family declares its own ``model`` keys
(:mod:`tuning.models`). The parser, the documentation (``docs/space.md``) and ``describe()`` read these tables;
adding a key means adding one line here (or to its family) and one field to its configuration.

Example:
    >>> TRAIN["learning_rate"].contains(0.5)
    True
    >>> TRAIN["momentum"].limits()
    'a number in [0, 1)'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    """One key of a section: its kind (``int``, ``float``, ``bool``, ``str``), limits and default.

    ``low``/``high`` are inclusive unless ``low_open``/``high_open``; ``choices`` lists the allowed strings;
    ``searchable`` keys accept a list or a range, the others one value; ``per_layer`` keys also accept
    ``{per_layer: ...}`` and ``{layers: [...]}`` (``per_layer_hint`` says why a key cannot, when a user may
    expect it to); ``noun`` names a model key in messages ("only a cnn has kernels").
    """

    kind: str
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    searchable: bool = True
    per_layer: bool = False
    per_layer_hint: str = ""
    required: bool = False
    nullable: bool = False
    noun: str = ""
    doc: str = ""

    def contains(self, value: float) -> bool:
        """Whether a number lies inside this key's own limits."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def limits(self) -> str:
        """The key's limits in words, e.g. ``in [0, 1)`` or ``>= 1`` or ``one of relu, elu``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        kind = "an integer" if self.kind == "int" else "a number"
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            return f"{kind} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        return kind


def _num(x: float) -> str:
    return f"{x:g}"


#: Data sets Keras downloads by name; ``npz`` is any other file in Keras's layout (``data.path``).
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
#: Every ``data.dataset`` value.
DATASETS = (*KERAS_DATASETS, "npz")
#: Every ``train.optimizer`` name and its class in ``keras.optimizers``.
OPTIMIZER_CLASSES = {
    "adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop", "nadam": "Nadam", "adagrad": "Adagrad",
}
#: Every ``study.sampler`` type and its Optuna class.
SAMPLER_CLASSES = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
    "nsga2": "NSGAIISampler",
}
#: Every ``study.pruner`` type and its Optuna class.
PRUNER_CLASSES = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "patient": "PatientPruner",
    "none": "NopPruner",
}
#: ``study.pruner`` when the space sets none: Optuna's median pruner, but comparing from the third trial on, not
#: the sixth. With Optuna's ``n_startup_trials=5`` the first five trials train every epoch whatever their curve, which
#: in a study of a few minutes is most of it (docs/results/time_to_accuracy/README.md measures both).
DEFAULT_PRUNER: dict[str, Any] = {"type": "median", "n_startup_trials": 2}
#: ``study.tuner`` type under ``study.engine: keras_tuner`` → the KerasTuner tuner class name.
TUNER_CLASSES = {"hyperband": "Hyperband", "random": "RandomSearch", "bayesian": "BayesianOptimization"}
ACTIVATIONS = ("relu", "elu", "gelu", "selu", "tanh", "sigmoid", "swish", "leaky_relu", "softplus")
OPTIMIZERS = tuple(OPTIMIZER_CLASSES)
SCHEDULES = ("constant", "cosine", "plateau")
LR_SCALINGS = ("none", "linear", "sqrt")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
METRICS = ("val_accuracy", "val_loss", "accuracy", "loss", "params", "train_seconds")
DIRECTIONS = ("maximize", "minimize")
#: ``optunahub``: a sampler or pruner package of OptunaHub (``{optunahub: samplers/dehb}``), loaded by name.
SAMPLERS = (*SAMPLER_CLASSES, "optunahub")
PRUNERS = (*PRUNER_CLASSES, "optunahub")
ENGINES = ("optuna", "keras_tuner")
TUNERS = tuple(TUNER_CLASSES)
TEST_ON = ("best", "all")

SECTIONS = ("data", "model", "train", "objective", "study")

DATA: dict[str, Key] = {
    "dataset": Key("str", "mnist", choices=DATASETS, searchable=False, doc="which data set"),
    "path": Key("str", None, searchable=False, nullable=True,
                doc="an .npz file, or a folder holding `<dataset>.npz`; required for `npz`"),
    "train_size": Key("int", None, low=1, searchable=False, nullable=True,
                      doc="training images used (before the validation split); null = all"),
    "validation_split": Key("float", 0.1, low=0, high=1, low_open=True, high_open=True, searchable=False,
                            doc="fraction of the training images held out for validation"),
    "test_size": Key("int", None, low=0, searchable=False, nullable=True,
                     doc="test images evaluated after training; 0 = no test evaluation; null = all"),
    "seed": Key("int", 0, searchable=False, doc="seed of the subset and split"),
}

#: Model keys several families share (each family lists the keys it has: :mod:`tuning.models`).
ACTIVATION = Key("str", "relu", choices=ACTIVATIONS, doc="activation of hidden layers")
BATCH_NORM = Key("bool", False, doc="batch normalisation after each conv / dense layer")

AUGMENTATION: dict[str, Key] = {
    "rotation": Key("float", 0.0, low=0, high=1, doc="random rotation, fraction of a full turn"),
    "shift": Key("float", 0.0, low=0, high=1, doc="random translation, fraction of height and width"),
    "zoom": Key("float", 0.0, low=0, high=1, doc="random zoom, fraction"),
    "flip": Key("bool", False, doc="random horizontal flips (not for digits)"),
}

TRAIN: dict[str, Key] = {
    "epochs": Key("int", None, low=1, high=10_000, required=True, doc="epochs per trial (pruners may stop earlier)"),
    "batch_size": Key("int", 128, low=1, high=65_536, doc="batch size"),
    "optimizer": Key("str", "adam", choices=OPTIMIZERS, doc="Keras optimizer"),
    "learning_rate": Key("float", 1e-3, low=0, low_open=True, doc="learning rate"),
    "momentum": Key("float", 0.0, low=0, high=1, high_open=True, doc="momentum (sgd, rmsprop only)"),
    "schedule": Key("str", "cosine", choices=SCHEDULES,
                    doc="learning rate over the epochs: cosine decay to 0 at the last epoch, constant, or halved "
                        "when val_loss stops improving (plateau)"),
    "lr_scaling": Key("str", "none", choices=LR_SCALINGS, searchable=False,
                      doc="learning_rate is the rate at lr_reference_batch; other batch sizes train at it times "
                          "batch/reference (linear) or its square root (sqrt); none = as given"),
    "lr_reference_batch": Key("int", 128, low=1, searchable=False,
                              doc="the batch size learning_rate is meant for when lr_scaling is not none"),
    # "augmentation" is a nested section: see AUGMENTATION.
    "precision": Key("str", "auto", choices=PRECISIONS, searchable=False,
                     doc="Keras dtype policy; auto = mixed_bfloat16 on CPUs with bfloat16 instructions (AMX, "
                         "AVX-512 BF16) and bf16 GPUs, mixed_float16 on older GPUs, float32 otherwise"),
    "chance_epochs": Key("int", 2, low=0, searchable=False,
                         doc="prune a trial still at chance accuracy after this many epochs; 0 = never"),
    "early_stopping": Key("int", 0, low=0, searchable=False,
                          doc="patience in epochs on the objective metric (`val_loss` when the objective is "
                              "`params` or `train_seconds`); 0 = never"),
}

STUDY: dict[str, Key] = {
    "name": Key("str", None, searchable=False, nullable=True,
                doc="study name; default the YAML file stem, or tuning-<hash> for a dict"),
    # "sampler", "pruner", "tuner", "enqueue" have their own shapes: see _parse.
    "engine": Key("str", "optuna", choices=ENGINES, searchable=False,
                  doc="who picks the configurations: Optuna's sampler and pruner, or a KerasTuner tuner"),
    "n_trials": Key("int", 20, low=1, searchable=False, doc="trials to run"),
    "timeout": Key("float", None, low=0, low_open=True, searchable=False, nullable=True,
                   doc="the study's budget in seconds: no trial starts after it, the running trial stops at its "
                       "next epoch end; null = no limit"),
    "seed": Key("int", 0, searchable=False, nullable=True, doc="sampler seed; null = random"),
    "n_jobs": Key("int", 1, low=1, searchable=False, doc="trials run side by side in threads"),
    "max_consecutive_failures": Key("int", 5, low=1, searchable=False,
                                    doc="stop the study after this many failed trials in a row"),
    "storage": Key("str", None, searchable=False, nullable=True,
                   doc="Optuna storage URL; default sqlite:///mlruns/optuna.db"),
    "test_on": Key("str", "best", choices=TEST_ON, searchable=False,
                   doc="which completed trials are evaluated on the test set: best = each one that beats the "
                       "study's best so far (the best model always has its test accuracy), all = every one"),
}
STUDY_SPECIAL = ("sampler", "pruner", "tuner", "stop_after", "enqueue")
STUDY_ORDER = ("name", "engine", "sampler", "pruner", "tuner", "n_trials", "timeout", "stop_after", "seed", "n_jobs",
               "max_consecutive_failures", "storage", "test_on", "enqueue")

#: ``study.stop_after``: stop the study once its best value has not improved for this long (a number alone is
#: ``trials``); any of them stops it.
STOP_AFTER: dict[str, Key] = {
    "trials": Key("int", None, low=1, searchable=False, nullable=True,
                  doc="complete or pruned trials finished since the best one"),
    "seconds": Key("float", None, low=0, low_open=True, searchable=False, nullable=True,
                   doc="seconds since the best trial finished"),
    "share": Key("float", None, low=0, high=1, low_open=True, searchable=False, nullable=True,
                 doc="a share of the study's budget: of n_trials in trials, and of timeout in seconds when set"),
}

#: The options of each KerasTuner tuner (``study.tuner``) under ``study.engine: keras_tuner``; the tuner's
#: ``max_trials`` is ``n_trials``, its ``seed`` the study's, Hyperband's ``max_epochs`` ``train.epochs``' upper bound.
TUNER_OPTIONS: dict[str, dict[str, Key]] = {
    "hyperband": {
        "factor": Key("int", 3, low=2, searchable=False, doc="reduction factor of epochs and models per bracket"),
        "hyperband_iterations": Key("int", None, low=1, searchable=False, nullable=True,
                                    doc="Hyperband iterations; null = repeat until n_trials"),
    },
    "random": {},
    "bayesian": {
        "num_initial_points": Key("int", None, low=1, searchable=False, nullable=True,
                                  doc="random trials before the Gaussian process; null = 3 x parameters"),
        "alpha": Key("float", 1e-4, low=0, low_open=True, searchable=False, doc="noise level of the process"),
        "beta": Key("float", 2.6, low=0, searchable=False, doc="exploration factor of the upper confidence bound"),
    },
}

#: Every searchable ``train`` key by its full path, in sampling order; a family's model keys come first.
TRAIN_PARAM_KEYS: dict[str, Key] = {
    **{f"train.{k}": v for k, v in TRAIN.items()},
    **{f"train.augmentation.{k}": v for k, v in AUGMENTATION.items()},
}
