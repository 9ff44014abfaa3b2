"""The harness: sweeps, training, reports and tools, each a `python -m bench.X` command.

When such a command starts, this package is imported before any of its code runs, and importing
torch takes seconds: a Ctrl-C or SIGTERM in that window would print an import traceback (or end
silently with 143). While `python -m` is importing (sys.argv[0] is "-m"), both signals are one
line and exit 130; nothing has been written yet. `bench.cli.run` installs the command's own
handlers once it starts.
"""
import os
import signal
import sys


def _interrupted_while_starting(signum, frame):
    argv = getattr(sys, "orig_argv", [])
    prog = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else "bench"
    os.write(2, f"{prog}: interrupted while starting; nothing was written\n".encode())
    os._exit(130)


if sys.argv[:1] == ["-m"]:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    signal.signal(signal.SIGTERM, _interrupted_while_starting)
