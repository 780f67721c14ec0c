"""Terminal output shared by the stages: progress bars and the closing summary table.

Everything shown here goes through the redaction owner (``llm/redact.py``) first: a stage's
description or message may quote a ``--base-url`` or ``gsrm:URL`` with a password or a query, and
stage output is often kept in log files."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from rlkd_bench.llm.redact import redact_text

T = TypeVar("T")


class RedactingConsole(Console):
    """A rich Console whose ``print`` redacts every string it is given (markup kept)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(redact_text(o) if isinstance(o, str) else o for o in objects), **kwargs)


console = RedactingConsole(stderr=True, highlight=False)


def progress_bar(items: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
                 enabled: bool = True):
    """A tqdm bar on stderr; ``update()`` it by hand when results arrive out of order."""
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=redact_text(desc), disable=not enabled, unit="row", dynamic_ncols=True)


def summary(title: str, rows: dict[str, Any]) -> None:
    """Print the end-of-run table: counts, tokens, cost, cache hits, time, where the outputs are."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        if isinstance(value, float):
            value = f"{value:,.4f}" if value < 10 else f"{value:,.1f}"
        table.add_row(redact_text(key), redact_text(str(value)))
    console.print(table)
