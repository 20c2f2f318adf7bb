"""Markdown tables: the one writer behind every table the kit prints or saves (results, bench, eval,
the lessons' claims), so they all render in JupyterLab, on GitHub and in a terminal alike."""
from __future__ import annotations


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A header row, the separator, one line per row; cells are str()-ed and their | escaped."""
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)
