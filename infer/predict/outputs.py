"""Files of answers written as they come: JSON Lines, CSV or Parquet, chosen by the file's suffix.

Each row has the fields of `ptx predict --json` (a result's, or an error's ``input`` and ``error``).
A run stopped at any point (Ctrl-C, a crash, ``kill -9``) leaves a file that `--resume` reads:

- ``.jsonl`` / ``.csv``: one whole row per write, flushed; a row cut short by a kill is dropped on
  resume (the file is cut back to its last complete line).
- ``.parquet``: a folder (a Parquet dataset, as Spark and Ray write: pyarrow, pandas, DuckDB and
  Ray read it as one table) of part files, each one row group, each written to a temporary name
  and renamed when whole. A part is closed every ``PART_ROWS`` rows or ``PART_SECONDS`` seconds,
  and on Ctrl-C or any error; a kill -9 loses at most the rows of the part still open. A resumed
  run adds parts after the existing ones: part names sort in input order.
"""
from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter
from pathlib import Path

from ptx.atomic import atomic_path
from ptx.errors import PtxError

SUFFIXES = (".jsonl", ".csv", ".parquet")
PART_ROWS = 10_000  # PTX_PARQUET_PART_ROWS overrides it (the tests kill a run after a few parts)
PART_SECONDS = 30.0
CLASSIFIER_COLUMNS = ("input", "label", "label_name", "probability", "low_confidence", "logits", "topk", "error")
REGRESSION_COLUMNS = ("input", "value", "logits", "error")
LIST_COLUMNS = ("logits", "topk")  # a CSV cell holds these as JSON text


def output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise PtxError(f"--output {path}: name a .jsonl, .csv or .parquet file (the suffix says the format)")
    return suffix[1:]


def as_written(text: str) -> str:
    """``text`` as an output file holds it: a file name that is not UTF-8 (Python keeps its bytes as
    surrogates, "caf\\udce9.png") with those characters as backslash escapes, since UTF-8 has no
    surrogates; any other text as it is. --resume compares names by this form."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def columns_for(regression: bool, topk: int) -> tuple[str, ...]:
    if regression:
        return REGRESSION_COLUMNS
    return tuple(c for c in CLASSIFIER_COLUMNS if c != "topk" or topk)


def open_output(path: str | os.PathLike, columns: tuple[str, ...], *, per_position: bool = False,
                resume: bool = False, schema=None):
    """A writer for ``path`` (by suffix). Without ``resume`` an existing file is refused (a run of
    hours is not overwritten by a typo); with it, rows are added after those already there.
    ``schema`` (a pyarrow schema): Parquet columns of other types than predict's answers have (a
    user's own model's outputs)."""
    path = Path(path)
    fmt = output_format(path)
    if path.exists() and not resume:
        raise PtxError(f"--output {path} exists: add --resume to answer only the inputs it lacks, or remove it")
    if path.exists():
        _check_columns(path, fmt, columns)
    try:
        if fmt == "parquet":
            return ParquetParts(path, columns, per_position, schema)
        return (JsonLinesWriter if fmt == "jsonl" else CsvWriter)(path, columns)
    except OSError as exc:  # a folder that is not there, or not writable: one line before any input is read
        raise PtxError(f"--output {path}: cannot write it ({exc.strerror or exc}); name a file in a folder "
                       "that exists and that you may write to") from None


def _check_columns(path: Path, fmt: str, columns: tuple[str, ...]) -> None:
    """Refuse to resume into answers written with other columns (another model, --topk added or
    left out): appended rows would not fit the CSV's header, and a Parquet reader keeps the first
    part's columns only, dropping the others' labels."""
    found, want = None, tuple(columns)
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            found = tuple(next(csv.reader(fh), ())) or None  # an empty file: nothing written to differ from
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        parts = sorted(path.glob("part-*.parquet"))
        found = tuple(pq.read_schema(parts[-1]).names) if parts else None
    else:  # JSON Lines: a result row holds every column but "error"
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill, which done_inputs cuts away
                if isinstance(row, dict) and "error" not in row:
                    found = tuple(c for c in columns if c in row) + tuple(c for c in row if c not in columns)
                    break
        want = tuple(c for c in columns if c != "error")
    if found is not None and found != want:
        raise PtxError(f"--resume: {path} holds the columns {', '.join(found) or 'none'}, this run writes "
                       f"{', '.join(want)}: resume with the first run's model and options (--topk), or name "
                       "another --output")


def done_inputs(path: str | os.PathLike) -> Counter:
    """How many times each input is answered in an output file (missing file: none). A JSON Lines
    or CSV file whose last row was cut short by a kill is cut back to its last whole row first."""
    path = Path(path)
    fmt = output_format(path)
    if not path.exists():
        return Counter()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return Counter(as_written(v) for part in sorted(path.glob("part-*.parquet"))
                       for v in pq.read_table(part, columns=["input"]).column(0).to_pylist())
    with open(path, "rb+") as fh:  # a row cut short by a kill is cut away
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)
    with open(path, newline="", encoding="utf-8") as fh:
        if fmt == "jsonl":
            rows = (as_written(json.loads(line)["input"]) for line in fh if line.strip())
        else:
            rows = (as_written(row["input"]) for row in csv.DictReader(fh))
        try:
            return Counter(rows)
        except (ValueError, KeyError, csv.Error) as exc:
            raise PtxError(f"--resume: {path} is not a file of ptx answers ({exc}); name another --output") from None


class _RowFile:
    """A file of answers written one whole row per write, flushed by the caller."""

    def __init__(self, path: Path, columns):
        self.path, self.columns = path, columns
        # A file name that is not UTF-8 (in ``input``, and in an error's text) is written escaped
        # (as_written) rather than ending the run half-written.
        self.fh = open(path, "a", newline="", encoding="utf-8", errors="backslashreplace")

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class JsonLinesWriter(_RowFile):
    def write(self, row: dict) -> None:
        self.fh.write(json.dumps(row) + "\n")


class CsvWriter(_RowFile):
    def __init__(self, path: Path, columns):
        new = not path.exists() or path.stat().st_size == 0
        super().__init__(path, columns)
        self.writer = csv.DictWriter(self.fh, columns)  # one write of the whole line per row
        if new:
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow({c: json.dumps(row[c]) if c in LIST_COLUMNS and row.get(c) is not None else row.get(c)
                              for c in self.columns})


class ParquetParts:
    """A folder of Parquet part files, one row group each (see the module's doc)."""

    def __init__(self, path: Path, columns, per_position: bool = False, schema=None):
        from ptx.extras import require

        require("parquet")
        if path.exists() and not path.is_dir():
            raise PtxError(f"--output {path}: a .parquet output is a folder of part files, and {path} is a file")
        path.mkdir(parents=True, exist_ok=True)
        self.path, self.columns = path, columns
        self.schema = schema or answer_schema(columns, per_position)
        self.part_rows = int(os.environ.get("PTX_PARQUET_PART_ROWS", PART_ROWS))
        self.rows: list[dict] = []
        self.started = time.monotonic()
        parts = sorted(path.glob("part-*.parquet"))
        self.next_part = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0

    def write(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.part_rows:
            self.flush()

    def flush(self, force: bool = False) -> None:
        """Close the open part when it is full or old enough (``force``: now)."""
        if not self.rows or not (force or len(self.rows) >= self.part_rows
                                 or time.monotonic() - self.started >= PART_SECONDS):
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Column by column: pyarrow's from_pylist took 1.3 s for 10,000 rows of ten logits here (busy
        # 2-core EPYC), a tenth of a whole `ptx predict FOLDER` spent in the main process; from_pydict
        # builds the same table in 9 ms.
        table = pa.Table.from_pydict({c: [_utf8(r.get(c)) for r in self.rows] for c in self.columns}, schema=self.schema)
        with atomic_path(self.path / f"part-{self.next_part:06d}.parquet") as tmp:
            pq.write_table(table, tmp, row_group_size=len(self.rows))
        self.next_part += 1
        self.rows = []
        self.started = time.monotonic()

    def close(self) -> None:
        self.flush(force=True)


def _utf8(value):
    """A Parquet string cell is UTF-8: a str holding a non-UTF-8 file name's surrogates as_written."""
    return as_written(value) if isinstance(value, str) else value


def answer_schema(columns, per_position: bool = False):
    """The Parquet schema of answers with these columns (a per-position model's logits: a list per position)."""
    import pyarrow as pa

    logits = pa.list_(pa.list_(pa.float64())) if per_position else pa.list_(pa.float64())
    topk = pa.list_(pa.struct([("label_name", pa.string()), ("probability", pa.float64())]))
    types = {"label": pa.int64(), "probability": pa.float64(), "value": pa.float64(), "low_confidence": pa.bool_(),
             "logits": logits, "topk": topk}
    return pa.schema([(c, types.get(c, pa.string())) for c in columns])
