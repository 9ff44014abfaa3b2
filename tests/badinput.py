"""The bad-input contract every `python -m bench.X` command keeps, as one assertion.

A refused input is: exit code 2, exactly one line on stderr (`bench.X: error: ...`), no traceback,
and nothing created or changed under the paths the command could have written (its `--out`, the
folder of a results file). `refused(main, argv, watched)` runs a command's `main(argv)` in this
process (fast: no interpreter start-up, so the tables in tests/test_bad_input_*.py can hold
hundreds of cases); `refused_cli(module, argv, watched)` runs the real `python -m` entry point,
for the few cases where the failure would only show in a fresh process (signals, `cli.run`'s net).
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def snapshot(paths) -> dict:
    """Every file and folder under `paths` with its size and modification time (missing: None)."""
    state = {}
    for path in map(Path, paths):
        try:
            exists = path.exists()
        except OSError as err:  # a name too long for the file system: nothing can be there
            state[str(path)] = f"unreadable: {err.strerror}"
            continue
        if not exists:
            state[str(path)] = None
            continue
        if path.is_file():
            stat = path.stat()
            state[str(path)] = (stat.st_size, stat.st_mtime_ns)
            continue
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                full = Path(root, name)
                stat = full.lstat()
                state[str(full)] = (stat.st_size, stat.st_mtime_ns if full.is_file() else 0)
        state[str(path)] = "dir"
    return state


def _check(code, stderr: str, before: dict, watched, argv) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, f"{argv}: exit {code}, stderr {stderr!r}"
    assert "Traceback" not in stderr, f"{argv}: traceback:\n{stderr}"
    assert len(lines) == 1, f"{argv}: {len(lines)} stderr lines:\n{stderr}"
    assert ": error: " in lines[0], f"{argv}: not a usage error line: {lines[0]!r}"
    after = snapshot(watched)
    assert after == before, f"{argv}: changed on disk: " + ", ".join(
        sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)))
    return lines[0]


def refused(main, argv: list[str], watched=()) -> str:
    """Run `main(argv)` in-process and assert the bad-input contract; return the error line."""
    before = snapshot(watched)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = exit_.code
    return _check(code, stderr.getvalue(), before, watched, argv)


def refused_cli(module: str, argv: list[str], watched=(), cwd: Path = REPO_ROOT, env: dict | None = None,
                timeout: float = 300) -> str:
    """Run `python -m module argv` and assert the bad-input contract; return the error line."""
    before = snapshot(watched)
    run_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    run_env.pop("SEQREC_TRACEBACK", None)
    proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd, env=run_env, capture_output=True,
                          text=True, timeout=timeout)
    return _check(proc.returncode, proc.stderr, before, watched, [module, *argv])
