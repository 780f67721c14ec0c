"""Terminal output shared by the stages: progress bars and the closing summary table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

T = TypeVar("T")
console = Console(stderr=True, highlight=False)


def progress_bar(items: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
                 enabled: bool = True):
    """A tqdm bar on stderr; ``update()`` it by hand when results arrive out of order."""
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, disable=not enabled, unit="row", dynamic_ncols=True)


def summary(title: str, rows: dict[str, Any]) -> None:
    """Print the end-of-run table: counts, tokens, cost, cache hits, time, where the outputs are."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        if isinstance(value, float):
            value = f"{value:,.4f}" if value < 10 else f"{value:,.1f}"
        table.add_row(key, str(value))
    console.print(table)
