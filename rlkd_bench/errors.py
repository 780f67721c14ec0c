"""Errors a user can act on. Each names where the problem is (file, line, field)."""

from __future__ import annotations

EXIT_USAGE = 2  # click's own code for bad options
EXIT_DATA = 65  # EX_DATAERR: the input data is wrong
EXIT_RUNTIME = 70  # EX_SOFTWARE: a model, a server or a budget stopped the run


class RlkdError(Exception):
    """Base class: the CLI prints the message (no traceback) and exits with ``exit_code``."""

    exit_code = EXIT_RUNTIME


class DataError(RlkdError):
    """Bad input data. ``str()`` reads ``file:line: field: what is wrong``."""

    exit_code = EXIT_DATA

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ":".join(str(x) for x in (file, line) if x is not None)
        parts = [p for p in (where, f"field '{field}'" if field else None, message) if p]
        super().__init__(": ".join(parts))


class ConfigError(RlkdError):
    """A bad option, config file or missing input directory."""

    exit_code = EXIT_USAGE


class BudgetExceeded(RlkdError):
    """``--max-cost`` would be passed by the next request; finished rows are kept."""

    exit_code = EXIT_RUNTIME
