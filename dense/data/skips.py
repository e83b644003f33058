"""The training samples a data set skipped (unreadable files), collected across DataLoader workers.

README, "What happens with bad data": a bad training sample is skipped and counted, and
:class:`dense.lit.callbacks.DataHealth` reads the count at the end of each epoch. DataLoader workers
are separate processes, so a list in a worker's memory would never reach the main process: every
skip is one line appended to a temporary file that the main process reads and empties.
"""

from __future__ import annotations

import logging
import os
import tempfile
import weakref
from typing import Any

__all__ = ["SkipLog", "SkippingDataset"]

log = logging.getLogger(__name__)


class SkipLog:
    """A temporary file of skipped sample names, one per line, shared by the worker processes.

    Only the process that created it removes the file (forked workers inherit the finalizer).
    """

    def __init__(self, prefix: str = "dense-skipped-") -> None:
        fd, self.path = tempfile.mkstemp(prefix=prefix, suffix=".txt")
        os.close(fd)
        self._finalizer = weakref.finalize(self, _remove_file, self.path, os.getpid())

    def record(self, name: str) -> None:
        # O_APPEND writes of one short line are atomic across processes (no lock needed).
        with open(self.path, "a") as fh:
            fh.write(name.replace("\n", " ") + "\n")

    def files(self) -> list[str]:
        """Sorted unique names recorded since the last :meth:`reset`, by every process."""
        try:
            with open(self.path) as fh:
                return sorted({line.rstrip("\n") for line in fh if line.strip()})
        except FileNotFoundError:
            return []

    def reset(self) -> None:
        open(self.path, "w").close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_finalizer", None)  # a copy in a worker process never removes the file
        return state


def _remove_file(path: str, owner_pid: int) -> None:
    if os.getpid() != owner_pid:
        return
    try:
        os.remove(path)
    except OSError:
        pass


class SkippingDataset:
    """Mixin of a data set that skips bad training samples: the protocol ``DataHealth`` reads.

    The data set sets :attr:`skip_log` to a :class:`SkipLog` in training mode (``None`` in
    evaluation, where a bad sample is an error) and calls :meth:`_record_skip` where it returns
    ``None`` for a sample.
    """

    skip_log: SkipLog | None = None

    def _record_skip(self, name: str, reason: str) -> None:
        log.warning("skipping training sample %s: %s", name, reason)
        if self.skip_log is not None:
            self.skip_log.record(name)

    def skipped_files(self) -> list[str]:
        """Sorted unique names skipped since the last :meth:`reset_skipped`, from all workers."""
        return self.skip_log.files() if self.skip_log is not None else []

    def reset_skipped(self) -> None:
        """Forget the skipped samples (``DataHealth`` calls it at the start of each epoch)."""
        if self.skip_log is not None:
            self.skip_log.reset()
