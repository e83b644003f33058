"""Reading a JSON file with errors that name the file (annotation, ground-truth and result files)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dense.data.report import DataError, DataPathError

__all__ = ["read_json"]


def read_json(path: str | os.PathLike, what: str, error: type[Exception] = DataError) -> Any:
    """The parsed content of `path`; a missing file raises `DataPathError` (a FileNotFoundError)
    "{what} not found: ...", malformed JSON raises `error` naming the file, line and column."""
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DataPathError(f"{what} not found: {path}") from e
    except IsADirectoryError as e:
        raise DataPathError(f"{what} is a directory, expected a JSON file: {path}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: {what} is not valid JSON: {e}") from e
