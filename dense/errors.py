"""The one error type every tool turns into a clean message and exit status 2.

A ``UserError`` is a mistake in what the user gave (a config key, a path, a data set, a file that is
not what was expected): the tools print its message on one line and exit with status 2, with no
traceback. Anything else is a bug in ``dense`` and keeps its traceback (exit status 1).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["EXIT_USER_ERROR", "UserError", "exit_user_error", "run_tool"]

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input from the user (config, paths, data, files); the message says what and how to fix."""


def exit_user_error(tool: str, error: BaseException) -> NoReturn:
    """Print ``<tool>: error: <message>`` to stderr and exit with status 2."""
    print(f"{tool}: error: {error}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run_tool(tool: str, main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``main``; a `UserError` becomes one line on stderr and exit status 2."""
    try:
        return main(*args, **kwargs)
    except UserError as e:
        exit_user_error(tool, e)
