"""The one markdown-table writer of the package (GitHub-flavoured), for every report a tool prints.

Standard library only.

Convention:
    - Cells are given as text, already formatted; a ``|`` inside a cell is escaped (``\\|``) so it cannot split the
      row. Column names are written as given.
    - Columns are left-aligned (``---``); with ``align_numbers`` a column whose every cell reads as a number (or is
      the placeholder ``–``) is right-aligned (``---:``). A table without rows has left-aligned columns.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["markdown_table", "looks_numeric"]

NUMBER_PLACEHOLDER = "–"  # a number that is not there (NaN, no match): aligned as the numbers of its column


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, align_numbers: bool = False) -> str:
    """A header line, a separator line and one line per row, joined by newlines (no trailing newline)."""
    if align_numbers and rows:
        numeric = [all(looks_numeric(row[index]) for row in rows) for index in range(len(columns))]
    else:
        numeric = [False] * len(columns)
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---:" if is_numeric else "---" for is_numeric in numeric) + " |"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def looks_numeric(cell: str) -> bool:
    """Whether a cell reads as a number (``float`` takes it) or is the placeholder ``–``."""
    if cell == NUMBER_PLACEHOLDER:
        return True
    try:
        float(cell)
    except ValueError:
        return False
    return True
