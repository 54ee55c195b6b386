"""The toolkit's exceptions: one type per kind of mistake, all under :class:`TuningError`.

Every message says what is wrong, what was received and how to fix it. The command line turns a
:class:`UserInputError` into exit code 2 and prints its message; anything else is a bug or a crash.

Example:
    >>> from tuning.errors import SpaceError
    >>> str(SpaceError("model.depth", "must be an integer", received="two", fix="write `depth: 2`"))
    'model.depth: must be an integer. Received: two. Fix: write `depth: 2`.'
"""

from __future__ import annotations

from typing import Any


class TuningError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class UserInputError(TuningError):
    """Something the user gave us is wrong: the command line exits 2 and nothing is written."""


#: Longest "Received:" value a message quotes; longer ones are cut and say how long they were.
MAX_RECEIVED = 200


def shorten(text: str, limit: int = MAX_RECEIVED) -> str:
    """``text`` cut to ``limit`` characters, with the length it had: a 52 MB value is never echoed in full.

    Example:
        >>> shorten("x" * 1000, 10)
        'xxxxxxxxxx… (1,000 characters)'
    """
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def _format(subject: str | None, problem: str, received: Any, fix: str | None) -> str:
    parts = [f"{subject}: {problem}" if subject else problem]
    if received is not _MISSING:
        parts.append(f"Received: {shorten(received) if isinstance(received, str) else _repr(received)}")
    if fix:
        parts.append(f"Fix: {fix}")
    return ". ".join(p.rstrip(".") for p in parts) + "."


_MISSING = object()


def _repr(value: Any) -> str:
    """``repr`` of a value cut to :data:`MAX_RECEIVED` characters, without building the whole text of a huge
    list or dict first."""
    if isinstance(value, list | tuple | set | dict) and len(value) > MAX_RECEIVED:
        items = list(value.items() if isinstance(value, dict) else value)[:MAX_RECEIVED]
        shown = repr(dict(items) if isinstance(value, dict) else items)
        return f"{shown[:MAX_RECEIVED]}… ({len(value):,} items)"
    return shorten(repr(value))


class SpaceError(UserInputError):
    """A search space is malformed; ``path`` is the key path inside the YAML file (``model.width.per_layer[2]``).

    Several problems found in one space are reported together: ``errors`` holds one
    :class:`SpaceError` per problem and ``str()`` lists them all.
    """

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        received: Any = _MISSING,
        fix: str | None = None,
        source: str | None = None,
    ) -> None:
        self.path = path
        self.problem = problem
        self.received = received
        self.fix = fix
        self.source = source
        self.errors: list[SpaceError] = [self]
        super().__init__(_format(path or None, problem, received, fix))

    @classmethod
    def collect(cls, errors: list[SpaceError], source: str | None = None) -> SpaceError:
        """Bundle several problems into one exception whose message lists them all."""
        if len(errors) == 1:
            errors[0].source = source
            return errors[0]
        first = errors[0]
        bundle = cls(first.path, first.problem, received=first.received, fix=first.fix, source=source)
        bundle.errors = list(errors)
        bundle.args = ("\n".join(str(e) for e in errors),)
        return bundle

    def __str__(self) -> str:
        body = "\n".join(f"  {e.args[0]}" for e in self.errors) if len(self.errors) > 1 else self.args[0]
        where = f" in {self.source}" if self.source else ""
        if len(self.errors) > 1:
            return f"{len(self.errors)} problems{where}:\n{body}"
        return f"{body.rstrip('.')}{where}." if where else body


class DataError(UserInputError):
    """A data set cannot be found, read or downloaded, or its arrays have the wrong shape."""


class StorageError(UserInputError):
    """An Optuna storage URL is malformed or the storage cannot be opened, or a study does not exist."""


class StorageFailedError(TuningError):
    """The Optuna storage failed under a running study (a full disk, a damaged file): the command exits 1; the
    trials that finished before are kept."""


class TrackingError(UserInputError):
    """The MLflow tracking location cannot be reached or written."""


class ConfigurationError(TuningError):
    """One trial's configuration cannot be built (e.g. too many pooling blocks): that trial fails, the study goes on."""


class NotLearningError(TuningError):
    """A trial's loss became NaN or infinite: that trial fails with this reason, the study goes on."""


class StorageLostError(TuningError):
    """The study's database server went away mid-study and did not come back in time: the command exits 3."""


class TooManyFailuresError(TuningError):
    """Too many trials failed in a row: the space most likely has a mistake; the study stops."""


def user_error(problem: str, *, received: Any = _MISSING, fix: str | None = None) -> UserInputError:
    """Build a :class:`UserInputError` with the standard "problem. Received: …. Fix: …." message.

    Example:
        >>> str(user_error("--n-trials must be positive", received=0, fix="pass --n-trials 1 or more"))
        '--n-trials must be positive. Received: 0. Fix: pass --n-trials 1 or more.'
    """
    return UserInputError(_format(None, problem, received, fix))
