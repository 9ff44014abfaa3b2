"""What every `python -m bench.X` command shares: one-line usage errors, argument types, a quiet exit
on a closed pipe.

Rule of the house: bad input is reported as ONE line on stderr (`bench.X: error: ...`) with exit
code 2, no traceback, before anything is written. A command raises `UsageError` for its own
checks; `parser()` builds an argparse parser whose own errors become `UsageError` too, with the
module docstring as description (first paragraph) and epilog (the rest: examples, method).
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

# The largest size flag any command takes: a tensor dimension (int32 indexing in CUDA kernels, and
# far beyond what any machine allocates); a bigger number is a typo, refused before it overflows.
MAX_INT = 2**31 - 1


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parser(prog: str, doc: str) -> OneLineParser:
    """A parser for `python -m PROG` described by its module docstring ``doc``."""
    head, _, rest = doc.partition("\n\n")
    return OneLineParser(prog=f"python -m {prog}", description=head, epilog=rest,
                         formatter_class=argparse.RawDescriptionHelpFormatter)


def _int_at_least(text: str, low: int, what: str) -> int:
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or int(digits) < low:
        raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}")
    if int(digits) > MAX_INT:
        raise argparse.ArgumentTypeError(f"{text} is larger than {MAX_INT}, the largest size any command takes")
    return int(digits)


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "non-negative integer")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads(text: str) -> int:
    """`--threads`: 0 (torch's default) up to the CPUs this process may use; more would time the
    scheduler's time slicing, not the model."""
    value = non_negative_int(text)
    if value > available_cpus():
        raise argparse.ArgumentTypeError(f"{value} threads asked for but this machine lets the process use "
                                         f"{available_cpus()} CPUs")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = non_negative_float(text)
    except argparse.ArgumentTypeError:
        value = 0.0
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def relative_tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a relative tolerance in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a relative tolerance in (0, 1), got {text!r}")
    return value


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_writable_folder(folder: Path, flag: str, shown: Path) -> None:
    """Create and remove a temporary folder in `folder`: the one test that also catches /proc,
    read-only mounts and root's permission-free access() answers."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-probe-", dir=folder))
    except OSError as err:
        raise UsageError(f"{flag} {shown}: cannot write in {folder} ({err.strerror or err})") from None


def _check_path_text(path, flag: str) -> Path:
    text = os.fspath(path)
    if not text or "\0" in text:
        raise UsageError(f"{flag} {text!r} is not a usable path")
    path = Path(text)
    try:
        name_max = os.pathconf(_nearest_existing(path.absolute()), "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    long = [part for part in path.parts if len(os.fsencode(part)) > name_max]
    if long:
        raise UsageError(f"{flag} {path}: the name {long[0][:40]!r}... is longer than {name_max} bytes")
    return path


def _refuse_dangling_link(path: Path, flag: str) -> None:
    for link in [path, *path.parents]:
        if link.is_symlink() and not link.exists():
            raise UsageError(f"{flag} {path}: {link} is a symbolic link to {os.readlink(link)}, which does not exist")


def output_dir(path, flag: str = "--out") -> Path:
    """Validate an output folder without creating it: it is a folder or does not exist yet, and the
    folder it is (or its nearest existing parent) can be written. Raises UsageError (one line) for
    a path that is a file, a parent that is a file, a place nothing can be written (/proc, a
    read-only mount, no permission) or a name too long."""
    path = _check_path_text(path, flag)
    _refuse_dangling_link(path, flag)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder")
    parent = _nearest_existing(path.absolute())
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
    _check_writable_folder(parent, flag, path)
    return path


def output_file(path, flag: str = "--out") -> Path:
    """Validate an output file path without creating anything: not a folder, and its folder can be
    created and written (see `output_dir`). An existing file must be writable."""
    path = _check_path_text(path, flag)
    _refuse_dangling_link(path, flag)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file path")
    if path.exists() and not path.is_file():
        raise UsageError(f"{flag} {path} is not a regular file")
    output_dir(path.parent if str(path.parent) else Path("."), flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {path} is not writable")
    return path


# lower-cased fragments of allocation failures: CPU allocators, torch's CUDA OutOfMemoryError, and the CUDA
# libraries that fail their own workspace allocation near the limit (cuBLAS handle or workspace, cuDNN)
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
                "cublas_status_alloc_failed", "cudnn_status_not_enough_memory")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is an allocation failure: MemoryError, torch.OutOfMemoryError (CUDA) or the
    RuntimeError a CPU allocation raises under an address-space limit."""
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and any(m in str(err).lower() for m in OOM_MESSAGES))


def clock(seconds: float) -> str:
    """Elapsed or remaining time for progress lines: H:MM:SS."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def report_usage_error(prog: str, err: BaseException) -> int:
    """Print ``err`` as the one-line usage error of ``prog``; return exit code 2."""
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 2


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(main: Callable[[], int], prog: str | None = None) -> None:
    """`sys.exit(main())` for `python -m bench.X`, so that no command ends in a traceback:
    - a closed stdout pipe (`... | head`) does not stop the work: later output goes to /dev/null;
    - SIGTERM (`kill`, a job scheduler) becomes KeyboardInterrupt, so it takes the Ctrl-C path
      (a running child is killed, finished rows are kept); an interrupt that reaches this level,
      for example while figures are redrawn, or one Python swallowed in a destructor, is one
      line, exit 130; once `main` has returned, signals are ignored (the work is complete);
    - a UsageError the command did not catch is one line, exit 2; an OSError (disk
      full, permission) is one line naming the file, exit 1;
    - any other exception is one line naming it, exit 1; `SEQREC_TRACEBACK=1` shows the traceback.
    """
    prog = prog or _prog(main)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # replaces bench/__init__'s start-up handler
    signal.signal(signal.SIGTERM, _terminate)
    swallowed = _catch_unraisable_interrupts()
    sys.stdout = _SurvivingStdout(sys.stdout)
    try:
        code = main()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is done: a late signal changes nothing
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if swallowed:
            raise KeyboardInterrupt
        sys.exit(code)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not interrupt the exit
        print(f"{prog}: interrupted; files written so far are complete", file=sys.stderr)
        sys.exit(130)
    except UsageError as err:
        if os.environ.get("SEQREC_TRACEBACK"):
            raise
        sys.exit(report_usage_error(prog, one_line(err)))
    except OSError as err:
        if os.environ.get("SEQREC_TRACEBACK"):
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"{prog}: error:{where} {err.strerror or err}", file=sys.stderr)
        sys.exit(1)
    except Exception as err:  # the last net: one line, never a traceback
        if os.environ.get("SEQREC_TRACEBACK"):
            raise
        frame = traceback.extract_tb(err.__traceback__)[-1]
        if is_out_of_memory(err):
            print(f"{prog}: error: out of memory ({one_line(err)[:200]}); choose a smaller shape", file=sys.stderr)
            sys.exit(1)
        print(f"{prog}: internal error: {type(err).__name__}: {one_line(err)} "
              f"(at {Path(frame.filename).name}:{frame.lineno}; SEQREC_TRACEBACK=1 shows the traceback)",
              file=sys.stderr)
        sys.exit(1)


def _catch_unraisable_interrupts() -> list:
    """An interrupt that lands inside a destructor or weakref callback is 'ignored' by Python (a
    multi-line 'Exception ignored in ...' on stderr, and the command carries on). Record it
    instead, so that `run` ends the command as interrupted; returns the list it records into."""
    swallowed: list = []
    default = sys.unraisablehook

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            swallowed.append(unraisable.exc_value)
        else:
            default(unraisable)

    sys.unraisablehook = hook
    return swallowed


class _SurvivingStdout:
    """stdout that outlives its reader: when the pipe closes (`... | head -1`), further output goes
    to /dev/null and the command's work goes on (a sweep keeps measuring, a training run keeps its
    epochs) instead of stopping at its next progress line."""

    def __init__(self, stream):
        self._stream = stream

    def _closed(self) -> None:
        os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()
            try:
                self._stream.flush()
            except BrokenPipeError:
                pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _prog(main: Callable) -> str:
    if main.__module__ != "__main__":
        return main.__module__
    spec = getattr(sys.modules["__main__"], "__spec__", None)  # `python -m bench.X`
    return spec.name if spec else os.path.basename(sys.argv[0])


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
