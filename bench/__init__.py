"""The harness: sweeps, training, reports and tools, each a `python -m bench.X` command.

When such a command starts, this package is imported before any of its code runs, and importing
torch takes seconds: a Ctrl-C or SIGTERM in that window would print an import traceback (or end
silently with 143). While `python -m` is importing (sys.argv[0] is "-m"), both signals are one
line and exit 130; nothing has been written yet. `bench.cli.run` installs the command's own
handlers once it starts.

The torch floor (pyproject.toml) is checked here, once, before any command runs: torch 2.5 is the
first release with the APIs the measurements stand on (`torch.OutOfMemoryError`, the MemTracker of
`torch.distributed._tools.mem_tracker`); CI runs 2.13.0.
"""
import os
import signal
import sys


def _interrupted_while_starting(signum, frame):
    argv = getattr(sys, "orig_argv", [])
    prog = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else "bench"
    os.write(2, f"{prog}: interrupted while starting; nothing was written\n".encode())
    os._exit(130)


TORCH_FLOOR = (2, 5)


def _check_torch() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("torch")
    except PackageNotFoundError:
        return  # torch's own import error says it better
    numbers = tuple(int(part) for part in installed.split("+")[0].split(".")[:2] if part.isdigit())
    if numbers < TORCH_FLOOR:
        floor = ".".join(map(str, TORCH_FLOOR))
        message = f"seqrec-bench needs torch>={floor}; torch {installed} is installed (pip install 'torch>={floor}')"
        if sys.argv[:1] == ["-m"]:  # a command: its one line, exit 2
            os.write(2, f"error: {message}\n".encode())
            os._exit(2)
        raise ImportError(message)


_check_torch()

if sys.argv[:1] == ["-m"]:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    signal.signal(signal.SIGTERM, _interrupted_while_starting)
