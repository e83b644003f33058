"""The one error type every tool turns into a clean message and exit status 2.

A ``UserError`` is a mistake in what the user gave (a config key, a path, a data set, a file that is
not what was expected): the tools print its message on one line and exit with status 2, with no
traceback. Anything else is a bug in ``dense`` and keeps its traceback (exit status 1).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "EXIT_USER_ERROR",
    "UserError",
    "WorkerDiedError",
    "dead_worker",
    "exit_user_error",
    "restore_sigchld",
    "run_tool",
    "worker_deaths",
]

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input from the user (config, paths, data, files); the message says what and how to fix."""


class WorkerDiedError(UserError):
    """A DataLoader worker process died (killed by a signal: usually the out-of-memory killer).
    Not a bug of the program but of its environment, so one line and exit status 2 as well."""


# torch's words: "DataLoader worker (pid 123) is killed by signal: Killed." (its SIGCHLD handler),
# "DataLoader worker (pid(s) 123, 124) exited unexpectedly" (its check of the workers).
_WORKER_DIED = re.compile(
    r"DataLoader worker \(pid(?:\(s\))? [\d, ]+\) (?:is killed by signal|exited unexpectedly)[^\n]*"
)
_LOADER_FILE = os.path.join("torch", "utils", "data", "dataloader.py")


def dead_worker(error: BaseException) -> str | None:
    """torch's report of a dead DataLoader worker in `error` or the errors it was raised from
    (the report, or the bare error's type), else None.

    A worker that dies while the main process reads its batch (the batch's tensors come through a
    connection to the worker) can surface as a bare ``ConnectionError`` / ``EOFError`` that torch
    re-raises from where the loader reads its queue (``_try_get_data``); only there is one a dead
    worker (the same error raised by a data set inside a worker is re-raised elsewhere).
    """
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        found = _WORKER_DIED.search(str(e)) if isinstance(e, RuntimeError) else None
        if found:
            return found.group(0).rstrip(".")
        if isinstance(e, (ConnectionError, EOFError)) and any(
            frame.f_code.co_name == "_try_get_data" and frame.f_code.co_filename.endswith(_LOADER_FILE)
            for frame, _ in traceback.walk_tb(e.__traceback__)
        ):
            return f"{type(e).__name__} while reading a batch from it"
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def worker_deaths(fix: str, checkpoint: str | os.PathLike | None = None) -> Iterator[None]:
    """Inside, torch's report of a dead DataLoader worker (`dead_worker`) becomes a
    `WorkerDiedError` that says `fix` (the settings to lower) and, when the file `checkpoint`
    exists by then, to resume from it."""
    try:
        yield
    except (RuntimeError, ConnectionError, EOFError) as e:
        # torch's SIGCHLD handler raises its own RuntimeError again whenever one more of the
        # loader's workers exits while this error propagates (the loader is still referenced by
        # the traceback), which would replace the message below: it is set aside at once (before
        # the traceback is read; seen in CI when it was not), and given back if this is not a dead
        # worker; otherwise it stays aside until `restore_sigchld` (the end of the job), as torch
        # installs it once per process.
        try:
            previous = _sigchld_aside()
        except RuntimeError as again:  # it fired once more before it was set aside
            if dead_worker(again) is None:
                raise
            previous = _sigchld_aside()
        detail = dead_worker(e)
        if detail is None:
            _sigchld_back(previous)
            raise
        resume = ""
        if checkpoint is not None:
            last = Path(checkpoint)
            resume = f"; resume with ckpt={last}" if last.is_file() else "; no checkpoint was written yet"
        raise WorkerDiedError(
            f"a DataLoader worker process died ({detail}): often the out-of-memory killer; {fix}{resume}"
        ) from e


_SET_ASIDE: Any = None  # the SIGCHLD handler `worker_deaths` replaced, until `restore_sigchld`
_UNCHANGED = object()


def _sigchld_aside() -> Any:
    """Replace the SIGCHLD handler by the default (main thread only); return what it was, or
    `_UNCHANGED`. The first handler set aside is kept for `restore_sigchld`."""
    global _SET_ASIDE
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGCHLD"):
        return _UNCHANGED
    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if _SET_ASIDE is None:
        _SET_ASIDE = previous
    return previous


def _sigchld_back(previous: Any) -> None:
    """Undo `_sigchld_aside` for an error that was not a dead worker."""
    global _SET_ASIDE
    if previous is not _UNCHANGED:
        signal.signal(signal.SIGCHLD, previous)
        if _SET_ASIDE is previous:
            _SET_ASIDE = None


def restore_sigchld() -> None:
    """Put back the SIGCHLD handler `worker_deaths` set aside (call once the failed job is over and
    its loaders are gone, e.g. before the next job of a sweep)."""
    global _SET_ASIDE
    if _SET_ASIDE is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, _SET_ASIDE)
        _SET_ASIDE = None


def exit_user_error(tool: str, error: BaseException) -> NoReturn:
    """Print ``<tool>: error: <message>`` to stderr and exit with status 2."""
    print(f"{tool}: error: {error}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run_tool(tool: str, main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``main``; a `UserError` (a dead DataLoader worker too) becomes one line on stderr and
    exit status 2."""
    try:
        with worker_deaths("use fewer DataLoader workers or a smaller batch"):
            return main(*args, **kwargs)
    except UserError as e:
        exit_user_error(tool, e)
