"""Every input is bounded: huge files, alias bombs, huge values in messages, absurd epochs and batch sizes.

Each case goes through ``tuning validate`` (in-process: no training, no subprocess) and checks the exit code
and the message the user sees.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tuning import space as spaces
from tuning.cli import main

GOOD = "model: {family: mlp}\ntrain: {epochs: 1}\n"


def _validate(tmp_path: Path, text: str, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    code = main(["validate", str(path), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_billion_laughs_is_refused_without_expanding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    code, text = _validate(tmp_path, "\n".join(lines) + "\n" + GOOD, capsys=capsys)
    assert code == 2
    assert f"more than {spaces.MAX_NODES:,} values" in text
    assert "alias" in text
    assert len(text) < 1000


def test_a_few_aliases_are_still_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "widths: &w [16, 32]\nmodel: {family: mlp, width: {per_layer: *w}}\ntrain: {epochs: 1}\n"
    code, out = _validate(tmp_path, text.replace("widths", "x-widths"), capsys=capsys)
    # an unknown top-level key is the only complaint: the alias itself is accepted
    assert "more than" not in out


def test_a_file_over_the_size_cap_is_refused_unread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    width = ", ".join(["16"] * (spaces.MAX_FILE_BYTES // 4 + 10))
    code, text = _validate(tmp_path, f"model:\n  family: mlp\n  width: [{width}]\ntrain: {{epochs: 1}}\n",
                           capsys=capsys)
    assert code == 2
    assert f"larger than {spaces.MAX_FILE_BYTES:,} characters" in text
    assert "bytes)" in text and len(text) < 1000


def test_a_long_list_under_the_size_cap_stops_at_the_value_cap(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    width = ", ".join(["16"] * 200_000)  # 800 kB, a 200,000-item list
    code, text = _validate(tmp_path, f"model:\n  family: mlp\n  width: [{width}]\ntrain: {{epochs: 1}}\n",
                           capsys=capsys)
    assert code == 2
    assert f"more than {spaces.MAX_NODES:,} values" in text


def test_a_huge_received_value_is_cut(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _validate(tmp_path, "model:\n  family: " + "x" * 500_000 + "\ntrain: {epochs: 1}\n", capsys=capsys)
    assert code == 2
    assert "model.family" in text
    assert "… (500,000 characters)" in text
    assert len(text) < 1000


def test_a_huge_received_list_is_cut_without_printing_it() -> None:
    from tuning.errors import user_error

    message = str(user_error("too many", received=list(range(1_000_000)), fix="fewer"))
    assert "… (1,000,000 items)" in message
    assert len(message) < 500


@pytest.mark.parametrize(("key", "value", "limits"), [
    ("train.epochs", "100000", "[1, 10000]"),
    ("train.batch_size", "10000000", "[1, 65536]"),
    ("train.epochs", "{low: 1, high: 1000000}", "[1, 10000]"),
])
def test_epochs_and_batch_size_have_upper_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str,
                                                 value: str, limits: str) -> None:
    code, text = _validate(tmp_path, GOOD, "--set", f"{key}={value}", capsys=capsys)
    assert code == 2
    assert key in text and limits in text
