"""The results table, written as Markdown (what the command prints), CSV and JSON from the same rows."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Column:
    """key: the row field and the CSV header; header: the Markdown header; digits: decimals shown (None: as is)."""

    key: str
    header: str
    digits: int | None = None


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)  # lines printed under the table

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(c.header for c in self.columns) + " |")
        lines.append("| " + " | ".join("---" if c.digits is None else "---:" for c in self.columns) + " |")
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(row.get(c.key), c.digits) for c in self.columns) + " |")
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines) + "\n"

    def write_csv(self, path: str) -> None:
        """The rows with full precision, one column per ``Column.key``."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=[c.key for c in self.columns], extrasaction="ignore")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({c.key: row.get(c.key) for c in self.columns})


def _cell(value: Any, digits: int | None) -> str:
    if value is None:
        return ""
    if digits is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return str(value)


def write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
