"""The benchmarks run end to end on real MNIST and print their ratios (overhead: one model per side, tracking on/off;
time to accuracy: one seed, a short budget; throughput: 600 images, and its race to a test accuracy on 3,000; dead
server: one round of 3 trials on 300 images).

The figures themselves are not checked (a shared machine is noisy: speed is measured, not asserted); what a
user relies on is that the script runs, trains both sides and prints the ratios against the goal.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, subprocess_env

pytestmark = pytest.mark.slow


def run_script(script: str, *args: str, mnist_dir: str | None, cwd: Path) -> str:
    """Run ``scripts/<script>`` with ``args`` (and the local MNIST folder) in ``cwd``; its exit code must be 0."""
    command = [sys.executable, str(ROOT / "scripts" / script), *args]
    if mnist_dir:
        command += ["--data-dir", mnist_dir]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=subprocess_env(mnist_dir, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_overhead_prints_the_ratio_toolkit_over_bare(mnist_dir: str | None, tmp_path: Path) -> None:
    out = run_script("bench_overhead.py", "--n", "1", "--rounds", "1", "--train-size", "600", mnist_dir=mnist_dir,
                     cwd=tmp_path)
    assert re.search(r"^round 1:\n  tracking (on|off) +toolkit +\d+\.\d+ s / bare +\d+\.\d+ s = \d\.\d{3}", out,
                     re.MULTILINE), out
    for setting in ("on", "off"):
        summary = rf"toolkit \(tracking {setting}\) / bare, wall-clock: all rounds \d+\.\d+"
        summary += r".*\[(ok|above the 1\.03 goal)\]"
        assert re.search(summary, out), out
    assert not list(tmp_path.iterdir())  # its storage and tracking files went to a temporary folder


def test_bench_time_to_accuracy_interleaves_contenders_and_prints_the_ratio(
    mnist_dir: str | None, tmp_path: Path
) -> None:
    plot = tmp_path.parent / f"{tmp_path.name}-plot.png"
    out = run_script("bench_time_to_accuracy.py", "--budget", "15", "--seeds", "0", "--contenders",
                     "toolkit,kt_hyperband", "--plot", str(plot), mnist_dir=mnist_dir, cwd=tmp_path)
    for name in ("toolkit", "kt_hyperband"):  # each ran for its budget and reported trials, epochs, best accuracy
        assert re.search(rf"^{name} +0 +\d+ +\d+ +[01]\.\d{{4}}", out, re.MULTILINE), out
        assert re.search(rf"^{name} +end [01]\.\d{{4}} \[[01]\.\d{{4}}, [01]\.\d{{4}}\]  to target +\d+\.\d s "
                         rf"\([01]/1\)$", out, re.MULTILINE), out
    assert re.search(r"^target: kt_hyperband's median final best, [01]\.\d{4}$", out, re.MULTILINE), out
    assert re.search(r"^median ratio of seconds to kt_hyperband's median best \(toolkit / kt_hyperband\): \d+\.\d\d",
                     out, re.MULTILINE), out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the anytime plot
    assert not list(tmp_path.iterdir())  # studies and KerasTuner folders went to temporary folders


def test_bench_time_to_accuracy_runs_the_mlp_space_too(mnist_dir: str | None, tmp_path: Path) -> None:
    out = run_script("bench_time_to_accuracy.py", "--space", "mlp", "--budget", "12", "--seeds", "0",
                     "--contenders", "toolkit_sh", mnist_dir=mnist_dir, cwd=tmp_path)
    assert out.startswith("space mlp;"), out
    assert re.search(r"^toolkit_sh +0 +[1-9]\d* +[1-9]\d* +[01]\.\d{4}", out, re.MULTILINE), out  # it trained
    assert "no target: kt_hyperband did not run" in out


def test_bench_throughput_prints_images_per_second_against_the_tutorial_setup(
    mnist_dir: str | None, tmp_path: Path
) -> None:
    out = run_script("bench_throughput.py", "--images", "600", "--rounds", "1", "--settings",
                     "bare,toolkit,toolkit-auto-256", mnist_dir=mnist_dir, cwd=tmp_path)
    assert re.search(r"train\.precision auto → (float32|mixed_bfloat16|mixed_float16) \(auto: ", out)
    assert re.search(r"^bare +\d+ +1\.00x +\d+\.\d% \(float32\)$", out, re.MULTILINE), out
    assert re.search(r"^toolkit-auto-256 +\d+ +\d+\.\d\dx", out, re.MULTILINE), out


def test_bench_throughput_races_the_tutorial_setup_to_a_test_accuracy(mnist_dir: str | None, tmp_path: Path) -> None:
    out = run_script("bench_throughput.py", "--to-accuracy", "0.5", "--max-epochs", "2", "--images", "1500",
                     mnist_dir=mnist_dir, cwd=tmp_path)
    assert "1485 training images, 10000 test images; target test accuracy 50.00%" in out, out
    for name in ("tutorial", "toolkit"):
        epochs = re.findall(rf"^{name} +epoch (\d): +\d+\.\d s, test accuracy (0\.\d{{4}})$", out, re.MULTILINE)
        assert [int(n) for n, _ in epochs] == list(range(1, len(epochs) + 1)) and 1 <= len(epochs) <= 2, out
        # it stops at the first epoch that reaches the target
        assert all(float(a) < 0.5 for _, a in epochs[:-1]), out
        assert re.search(rf"^{name} +seconds to 50\.00%: (\d+\.\d|not in 2 epochs)$", out, re.MULTILINE)
    assert re.search(r"^ratio \(tutorial / toolkit\) at equal test accuracy: (\d+\.\d\dx|- \(a setup did not reach)",
                     out, re.MULTILINE), out


def test_bench_dead_server_prints_the_ratio_tracked_with_the_server_killed_over_untracked(
    mnist_dir: str | None, tmp_path: Path
) -> None:
    out = run_script("bench_dead_server.py", "--rounds", "1", "--trials", "2", "--kill-after", "0",
                     "--train-size", "300", mnist_dir=mnist_dir, cwd=tmp_path)
    assert re.search(r"^round 1: untracked \d+\.\d s, tracked with the server killed \d+\.\d s = \d\.\d{3}$", out,
                     re.MULTILINE), out
    assert re.search(r"^  extra seconds \(tracked-dead - untracked\): start-up [+-]\d+\.\d, .*, end [+-]\d+\.\d$", out,
                     re.MULTILINE), out
    # the server really died under the study, which noticed it and ended with the back-fill hint
    assert re.search(r"'does not answer' warning: \d+\.\d s after the kill; tuning sync hint: yes", out), out
    assert re.search(r"^tracked with the server killed / untracked: median \d+\.\d{3}, rounds \d+\.\d{3} +"
                     r"\[(ok|above the 1\.2 goal)\]$", out, re.MULTILINE), out
    assert not list(tmp_path.iterdir())  # its studies and the server's store went to a temporary folder
