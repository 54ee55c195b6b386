"""The toolkit's exceptions: one type per kind of mistake, all under :class:`TuningError`.

Every message says what is wrong, what was received and how to fix it. The command line turns a
:class:`UserInputError` into exit code 2 and prints its message; anything else is a bug or a crash.

Example:
    >>> from tuning.errors import SpaceError
    >>> str(SpaceError("model.depth", "must be an integer", received="two", fix="write `depth: 2`"))
    'model.depth: must be an integer. Received: two. Fix: write `depth: 2`.'
"""

from __future__ import annotations

import re
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


#: Longest study name, in characters (and at most :data:`MAX_NAME_BYTES` in UTF-8): a study name becomes a folder
#: name (``mlruns/models/<study>``), an MLflow experiment and run name, and report file names.
MAX_NAME_CHARS = 100
#: Longest study name in bytes once encoded as UTF-8: most file systems allow 255 bytes per file name.
MAX_NAME_BYTES = 255
#: What printing raw could let drive a terminal or disguise text: control characters (ESC, BEL, NUL, newlines: the
#: whole Unicode category Cc), line and paragraph separators, lone surrogates, and the bidirectional controls
#: (embeddings, overrides, isolates, marks: U+202E shows what follows backwards).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: every control character, line separator and bidirectional control
    shown as its Python escape (``\\x1b``, ``\\n``, ``\\u202e``); anything else unchanged.

    Example:
        >>> print(printable("mnist\x1b[31m red\u202e"))
        mnist\\x1b[31m red\\u202e
    """
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def study_name_problem(name: Any) -> tuple[str, str] | None:
    """What makes ``name`` unusable as a study name, and how to fix it; ``None`` when it is a good name.

    A study name is printed in tables, and becomes a folder name, an MLflow experiment and run name: it must be
    a non-empty string without control characters, line breaks or bidirectional controls, other than ``.`` and
    ``..``, of at most :data:`MAX_NAME_CHARS` characters (:data:`MAX_NAME_BYTES` bytes in UTF-8).

    Example:
        >>> study_name_problem("mnist tpe/1") is None
        True
        >>> study_name_problem("mnist\x1b[2J")[0]
        'must not hold control characters, line breaks or bidirectional controls (it holds \\\\x1b)'
    """
    if not isinstance(name, str):
        return "must be a string", "write a name such as mnist_tpe"
    if not name.strip():
        return "must not be empty", "write a name such as mnist_tpe, or leave it out for the default"
    bad = sorted(set(_UNSAFE.findall(name)))
    if bad:
        return (f"must not hold control characters, line breaks or bidirectional controls (it holds "
                f"{', '.join(printable(ch) for ch in bad[:5])})",
                "remove them: the name is printed in tables and becomes a folder and MLflow experiment name")
    if name in (".", ".."):
        return "cannot be . or .. (the name becomes a folder name)", "write a name such as mnist_tpe"
    if len(name) > MAX_NAME_CHARS or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return (f"is longer than {MAX_NAME_CHARS} characters ({MAX_NAME_BYTES} bytes in UTF-8), the most a name "
                f"may have (it becomes a folder name and an MLflow experiment name): it has {len(name):,}",
                f"shorten it to at most {MAX_NAME_CHARS} characters")
    return None


def check_study_name(name: Any, option: str, fix: str | None = None) -> None:
    """Refuse a study name given as ``option`` (``--study-name``, ``study_name``): see :func:`study_name_problem`;
    ``fix`` replaces the standard fix (for a name the user did not write, a default one).

    Example:
        >>> check_study_name("", "--study-name")
        Traceback (most recent call last):
        ...
        tuning.errors.UserInputError: --study-name must not be empty. Received: ''. Fix: write a name such as ...

    Raises:
        UserInputError: what is wrong with the name, the name itself (escaped, cut to 200 characters), the fix.
    """
    problem = study_name_problem(name)
    if problem is not None:
        shown = printable(name) if isinstance(name, str) and name.strip() else repr(name)
        raise user_error(f"{option} {problem[0]}", received=shown, fix=fix or problem[1])
