"""The regrouped bench/ keeps what was written against the old layout working: the committed
command.txt files' `python -m bench.X` names and the imports outside scripts use (the outside
cases import `from bench.point import run, device_name`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_old_point_module_still_gives_run_and_device_name():
    from bench import point
    from bench.measure.device import device_name
    from bench.sweep import point as sweep_point

    assert point.run is sweep_point.run and point.device_name is device_name


@pytest.mark.slow
@pytest.mark.parametrize("module", ["bench.sweep", "bench.train", "bench.report", "bench.rank", "bench.plots",
                                    "bench.ab", "bench.profile", "bench.regress"])
def test_every_documented_command_starts(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-500:]
