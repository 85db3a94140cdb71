"""The results table, written as Markdown (what the command prints), CSV and JSON from the same rows."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Column:
    """key: the row field and the CSV header; header: the Markdown header; digits: decimals shown (None: as is);
    interval: the row also holds ``key_low`` / ``key_high`` (a 95 % interval), shown as "v [low, high]" and written
    as two more CSV columns."""

    key: str
    header: str
    digits: int | None = None
    interval: bool = False

    def csv_keys(self) -> list[str]:
        return [self.key, f"{self.key}_low", f"{self.key}_high"] if self.interval else [self.key]

    def cell(self, row: dict[str, Any]) -> str:
        text = _cell(row.get(self.key), self.digits)
        if self.interval and row.get(f"{self.key}_low") is not None:
            text += f" [{_cell(row[f'{self.key}_low'], self.digits)}, {_cell(row[f'{self.key}_high'], self.digits)}]"
        return text


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)  # lines printed under the table
    name: str = "metrics"  # its CSV file: <name>.csv

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(c.header for c in self.columns) + " |")
        lines.append("| " + " | ".join("---" if c.digits is None else "---:" for c in self.columns) + " |")
        for row in self.rows:
            lines.append("| " + " | ".join(c.cell(row) for c in self.columns) + " |")
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines) + "\n"

    def write_csv(self, path: str) -> None:
        """The rows with full precision, one column per ``Column.key``."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            keys = [key for c in self.columns for key in c.csv_keys()]
            writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({key: row.get(key) for key in keys})


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


def interval_fields(key: str, value, scale: float = 1.0) -> dict[str, float]:
    """A row's ``key``, ``key_low``, ``key_high`` from a ``stats.Interval`` (times ``scale``: fractions -> %)."""
    return {key: scale * value.estimate, f"{key}_low": scale * value.low, f"{key}_high": scale * value.high}


_TEST_COLUMNS = [
    Column("group", "Split / part"), Column("metric", "Metric"), Column("side", "Method"),
    Column("reference", "Against"), Column("difference", "Difference", 2, interval=True), Column("test", "Test"),
    Column("p_value", "p", 4), Column("p_holm", "p (Holm)", 4), Column("significant", "Significant"),
]


def tests_table(tests: list, scale: dict[str, float], title: str = "Paired tests") -> Table:
    """One row per ``stats.PairedTest`` (after ``stats.holm``): the difference with its interval (times
    ``scale[metric]``, default 1), the test, p before and after Holm's correction, "*" where significant."""
    rows = []
    for t in tests:
        factor = scale.get(t.metric, 1.0)
        rows.append({"group": t.group, "metric": t.metric, "side": t.side, "reference": t.reference,
                     **interval_fields("difference", t.difference, factor), "test": t.test, "p_value": t.p_value,
                     "p_holm": t.p_holm, "significant": "*" if t.significant else ""})
    notes = [f"{len(tests)} comparisons of this run, Holm-corrected together; * : p (Holm) < 0.05. Difference = "
             "method − the method it is against, on the same items, with its 95 % paired-bootstrap interval "
             f"({tests[0].difference.resamples} resamples, seed {tests[0].difference.seed})."] if tests else []
    return Table(title, _TEST_COLUMNS, rows, notes, name="tests")


def write_tables(out_dir: str, tables: list[Table], stem: str = "metrics") -> tuple[str, list[str]]:
    """``stem``.md (every table, the first one first) and one CSV per table (``stem``.csv for the first,
    ``stem``-<name>.csv for the others); returns the Markdown and the files written."""
    import os

    markdown = "\n".join(t.markdown() for t in tables)
    files = [os.path.join(out_dir, f"{stem}.md")]
    with open(files[0], "w", encoding="utf-8") as f:
        f.write(markdown)
    for k, table in enumerate(tables):
        files.append(os.path.join(out_dir, f"{stem}.csv" if k == 0 else f"{stem}-{table.name}.csv"))
        table.write_csv(files[-1])
    return markdown, files
