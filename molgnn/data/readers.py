"""Molecule files -> :class:`RawRecord` streams, one record per input row, never a silent drop.

Formats by extension (each also gzip-compressed, ``.gz``): ``.csv``, ``.tsv``, ``.smi``/``.smiles``
(whitespace-separated ``SMILES [name]``, optional header), ``.sdf``/``.sd``, ``.parquet``; http(s)
URLs are downloaded first. Decisions that shape what ingest sees:

- ``row`` is the 0-based record index, header excluded. Blank lines in CSV/TSV/SMI are records
  too (``raw == ""``), so ingest rejects them as empty input and row numbers match line numbers.
- Text is decoded line by line as UTF-8, falling back to latin-1 for a line that is not UTF-8;
  a byte-order mark is stripped and UTF-16 files (with BOM) are decoded as such.
- A CSV row with the wrong number of fields, or an SDF record that cannot be split into a mol block,
  yields a record whose ``error`` says so; ingest rejects it at stage ``read``.
- Targets: ``target_columns=None`` keeps every numeric column (every non-missing value parses as a
  finite float, at least one does); ``[]`` keeps none. A value that is missing ("", NA, nan, ...)
  or not a finite number becomes ``None`` (NaN in molecules.parquet): the molecule is kept
  because other targets or the structure itself may still be useful.
- SDF: each record is one row, ``raw`` is its title line; 3D coordinates (any non-zero z) become the
  given geometry. A record RDKit cannot parse is still yielded; ingest rejects it.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import math
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import weakref
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from molgnn.chem.conformers import mol_block_geometry
from molgnn.data import schema

SMILES_COLUMN_CANDIDATES = ("smiles", "canonical_smiles", "mol", "smi")
MISSING_VALUES = frozenset({"", "na", "n/a", "nan", "none", "null", "-", "?"})
# Output column names of molecules.parquet: never taken as targets when targets are auto-detected.
RESERVED_COLUMNS = frozenset({schema.MOL_ID, schema.SMILES, schema.INCHIKEY, schema.SOURCE, schema.ROW,
                              schema.RAW, schema.N_DUPLICATES, schema.ATOMIC_NUMBERS, schema.POSITIONS})
FORMATS = {".csv": "csv", ".tsv": "tsv", ".smi": "smi", ".smiles": "smi", ".sdf": "sdf", ".sd": "sdf",
           ".parquet": "parquet"}

csv.field_size_limit(1 << 28)   # QM9 rows carry long coordinate/frequency fields


class InputFormatError(ValueError):
    """The input cannot be read at all: missing file, unknown format, no SMILES column, ..."""


class DownloadError(ConnectionError):
    """A URL input could not be downloaded (no network, HTTP error, ...)."""


@dataclass
class RawRecord:
    source: str
    row: int
    raw: str                                      # SMILES text as read, or the SDF record's title line
    props: dict[str, float | None] = field(default_factory=dict)
    mol_block: str | None = None                  # SDF records: the structure to standardize
    atomic_numbers: np.ndarray | None = None      # given geometry, all atoms incl. H: (n,)
    positions: np.ndarray | None = None           # given geometry, Angstrom: (n, 3)
    error: str | None = None                      # why the reader could not read this record


# --------------------------------------------------------------------------------------- helpers

def to_float(value: object) -> float | None:
    """A finite float, or ``None`` for missing / non-numeric / infinite values."""
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        x = float(value)
        return x if math.isfinite(x) else None
    text = str(value).strip()
    if text.lower() in MISSING_VALUES:
        return None
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _is_numeric_text(value: str) -> bool | None:
    """True/False for a number/non-number, ``None`` for a missing value."""
    text = value.strip()
    if text.lower() in MISSING_VALUES:
        return None
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def _open_binary(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def iter_lines(path: str | Path) -> Iterator[str]:
    """Decoded lines (line endings kept) of a plain or gzipped text file; see the module notes."""
    path = Path(path)
    try:
        with _open_binary(path) as fh:
            head = fh.read(2)
            if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
                text = (head + fh.read()).decode("utf-16", errors="replace")
                yield from text.splitlines(keepends=True)
                return
            first = True
            for raw_line in _prepend(head, fh):
                line = _decode(raw_line)
                if first:
                    line = line.removeprefix("\ufeff")
                    first = False
                if "\r" in line[:-2]:       # old Mac line endings: split on lone carriage returns
                    yield from (piece for piece in _LONE_CR.split(line) if piece)
                else:
                    yield line
    except (OSError, EOFError, zlib.error) as exc:   # gzip.BadGzipFile is an OSError
        raise InputFormatError(f"cannot read {path}: {exc}") from exc


def _prepend(head: bytes, fh) -> Iterator[bytes]:
    """Line iteration of a binary file whose first bytes were already consumed."""
    first = head + fh.readline()
    if first:
        yield first
    yield from fh


def format_of(name: str) -> str:
    """Format key (csv, tsv, smi, sdf, parquet) from a file name or URL path, ``.gz`` ignored."""
    lower = name.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    suffix = Path(lower).suffix
    if suffix not in FORMATS:
        raise InputFormatError(f"unknown file format {suffix or '(no extension)'!r} for {name}; "
                               f"expected one of {sorted(FORMATS)} (optionally .gz)")
    return FORMATS[suffix]


def is_url(path_or_url: str | Path) -> bool:
    return str(path_or_url).lower().startswith(("http://", "https://"))


def download(url: str, timeout_s: float = 60.0) -> Path:
    """Fetch ``url`` to a temporary file keeping its extension; the caller deletes it."""
    url_path = urllib.parse.urlparse(url).path
    name = Path(url_path).name or "download"
    suffix = "".join(Path(name).suffixes[-2:]) if name.lower().endswith(".gz") else Path(name).suffix
    fd, tmp = tempfile.mkstemp(prefix="molgnn-download-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            while block := resp.read(1 << 20):
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        os.unlink(tmp)
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"could not download {url}: {reason} (is there network access?)") from exc
    return Path(tmp)


def find_smiles_column(columns: list[str], smiles_column: str | None, where: str) -> str:
    """The SMILES column: the one named (exactly, else case-insensitively) or auto-detected."""
    if smiles_column is not None:
        if smiles_column in columns:
            return smiles_column
        matches = [c for c in columns if c.strip().lower() == smiles_column.strip().lower()]
        if matches:
            return matches[0]
        raise InputFormatError(f"{where}: SMILES column {smiles_column!r} not found; columns are {columns}")
    lowered = {c.strip().lower(): c for c in reversed(columns)}
    for candidate in SMILES_COLUMN_CANDIDATES:
        if candidate in lowered:
            return lowered[candidate]
    raise InputFormatError(f"{where}: no SMILES column found among {columns}; expected one of "
                           f"{list(SMILES_COLUMN_CANDIDATES)} (any case) or pass smiles_column")


def _select_targets(available: list[str], target_columns: list[str] | None, strict: bool, where: str,
                    numeric: Callable[[], list[str]]) -> list[str]:
    if target_columns is None:
        return numeric()
    missing = [c for c in target_columns if c not in available]
    if missing and strict:
        raise InputFormatError(f"{where}: target column(s) {missing} not found; columns are {available}")
    return [c for c in target_columns if c in available]


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, not {limit!r}")


# ---------------------------------------------------------------------------------- delimited

def read_table_rows(path: str | Path, delimiter: str) -> tuple[list[str], Iterator[list[str]]]:
    """Header and data rows of a CSV/TSV file (any encoding, gzip or not)."""
    lines = iter_lines(path)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputFormatError(f"{path}: the file is empty (no header row)") from None
    except csv.Error as exc:
        raise InputFormatError(f"{path}: malformed header: {exc}") from exc

    def rows() -> Iterator[list[str]]:
        try:
            yield from reader
        except csv.Error as exc:
            raise InputFormatError(f"{path}, line {reader.line_num}: {exc}") from exc

    return [h.strip() for h in header], rows()


def _numeric_columns_delimited(path: Path, delimiter: str, candidates: list[str]) -> list[str]:
    header, rows = read_table_rows(path, delimiter)
    index = {c: header.index(c) for c in candidates}
    seen_number = dict.fromkeys(candidates, False)
    alive = set(candidates)
    for row in rows:
        if len(row) != len(header):
            continue
        for c in list(alive):
            verdict = _is_numeric_text(row[index[c]])
            if verdict is False:
                alive.discard(c)
            elif verdict:
                seen_number[c] = True
        if not alive:
            break
    return [c for c in candidates if c in alive and seen_number[c]]


def _read_delimited(path: Path, source: str, delimiter: str, smiles_column: str | None,
                    target_columns: list[str] | None, strict: bool) -> Iterator[RawRecord]:
    header, rows = read_table_rows(path, delimiter)
    smiles_col = find_smiles_column(header, smiles_column, source)
    others = [c for c in header if c != smiles_col and c not in RESERVED_COLUMNS]
    targets = _select_targets(header, target_columns, strict, source,
                              lambda: _numeric_columns_delimited(path, delimiter, others))
    si = header.index(smiles_col)
    ti = [(t, header.index(t)) for t in targets]

    def generate() -> Iterator[RawRecord]:
        for row_index, row in enumerate(rows):
            if not row or (len(row) == 1 and not row[0].strip() and len(header) > 1):
                yield RawRecord(source, row_index, "", {t: None for t in targets})
            elif len(row) != len(header):
                raw = row[si] if si < len(row) else delimiter.join(row)
                yield RawRecord(source, row_index, raw, {t: None for t in targets},
                                error=f"expected {len(header)} fields, found {len(row)}")
            elif "\n" in row[si] or "\r" in row[si]:
                yield RawRecord(source, row_index, row[si], {t: None for t in targets},
                                error="SMILES field spans several lines (unbalanced quote?)")
            else:
                yield RawRecord(source, row_index, row[si], {t: to_float(row[i]) for t, i in ti})

    return generate()


# ---------------------------------------------------------------------------------------- smi

def _read_smi(path: Path, source: str, target_columns: list[str] | None, strict: bool) -> Iterator[RawRecord]:
    if target_columns and strict:
        raise InputFormatError(f"{source}: SMILES files have no property columns, cannot read {target_columns}")
    lines = iter_lines(path)

    def generate() -> Iterator[RawRecord]:
        row_index = 0
        for line_no, line in enumerate(lines):
            tokens = line.split(None, 1)
            if line_no == 0 and tokens and tokens[0].strip().lower() in SMILES_COLUMN_CANDIDATES:
                continue   # header line
            yield RawRecord(source, row_index, tokens[0] if tokens else "")
            row_index += 1

    return generate()


# ---------------------------------------------------------------------------------------- sdf

_SDF_FIELD = re.compile(r"^>.*?<([^>]*)>")


def iter_sdf_records(path: str | Path) -> Iterator[list[str]]:
    """Each SDF record's lines (without the ``$$$$`` terminator); a truncated last record too."""
    record: list[str] = []
    for line in iter_lines(path):
        if line.rstrip("\r\n").strip() == "$$$$":
            yield record
            record = []
        else:
            record.append(line)
    if any(line.strip() for line in record):
        yield record


def _split_sdf_record(lines: list[str]) -> tuple[str, dict[str, str], str | None]:
    """(mol block, data fields, error) of one record."""
    end = next((i for i, ln in enumerate(lines) if ln.rstrip("\r\n").strip() == "M  END"), None)
    if end is None:
        return "".join(lines), {}, "SDF record has no 'M  END' line (truncated or not a mol block)"
    block = "".join(lines[: end + 1])
    fields: dict[str, str] = {}
    name: str | None = None
    values: list[str] = []
    for ln in lines[end + 1:]:
        text = ln.rstrip("\r\n")
        m = _SDF_FIELD.match(text)
        if m:
            name, values = m.group(1).strip(), []
            fields[name] = ""
        elif name is not None:
            if not text.strip():
                name = None
            else:
                values.append(text)
                fields[name] = "\n".join(values)
    return block, fields, None


def _read_sdf(path: Path, source: str, target_columns: list[str] | None, strict: bool) -> Iterator[RawRecord]:
    def numeric_fields() -> list[str]:
        verdicts: dict[str, bool] = {}
        numbers: set[str] = set()
        for lines in iter_sdf_records(path):
            for k, v in _split_sdf_record(lines)[1].items():
                ok = _is_numeric_text(v)
                if ok is False:
                    verdicts[k] = False
                else:
                    verdicts.setdefault(k, True)
                    if ok:
                        numbers.add(k)
        return [k for k, ok in verdicts.items() if ok and k in numbers and k not in RESERVED_COLUMNS]

    if target_columns is None:
        targets = numeric_fields()
    elif target_columns:
        present: set[str] = set()
        for lines in iter_sdf_records(path):
            present.update(_split_sdf_record(lines)[1])
        targets = _select_targets(sorted(present), target_columns, strict, source, list)
    else:
        targets = []

    def generate() -> Iterator[RawRecord]:
        for row_index, lines in enumerate(iter_sdf_records(path)):
            title = lines[0].rstrip("\r\n") if lines else ""
            if not any(ln.strip() for ln in lines):
                yield RawRecord(source, row_index, "", {t: None for t in targets})
                continue
            block, fields, error = _split_sdf_record(lines)
            rec = RawRecord(source, row_index, title, {t: to_float(fields.get(t)) for t in targets},
                            mol_block=block, error=error)
            if error is None:
                geometry = mol_block_geometry(block)
                if geometry is not None:
                    rec.atomic_numbers, rec.positions = geometry
            yield rec

    return generate()


# ------------------------------------------------------------------------------------ parquet

def _read_parquet(path: Path, source: str, smiles_column: str | None, target_columns: list[str] | None,
                  strict: bool) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise InputFormatError(f"{source}: not a readable Parquet file: {exc}") from exc
    arrow_schema = pf.schema_arrow
    columns = list(arrow_schema.names)
    smiles_col = find_smiles_column(columns, smiles_column, source)

    def numeric() -> list[str]:
        return [c for c in columns if c != smiles_col and c not in RESERVED_COLUMNS
                and (pa.types.is_integer(arrow_schema.field(c).type)
                     or pa.types.is_floating(arrow_schema.field(c).type))]

    targets = _select_targets(columns, target_columns, strict, source, numeric)
    with_geometry = schema.ATOMIC_NUMBERS in columns and schema.POSITIONS in columns
    wanted = [smiles_col, *targets] + ([schema.ATOMIC_NUMBERS, schema.POSITIONS] if with_geometry else [])

    def generate() -> Iterator[RawRecord]:
        row_index = 0
        try:
            for batch in pf.iter_batches(batch_size=65536, columns=list(dict.fromkeys(wanted))):
                data = {c: batch.column(c).to_pylist() for c in batch.schema.names}
                for i, smi in enumerate(data[smiles_col]):
                    rec = RawRecord(source, row_index, "" if smi is None else str(smi),
                                    {t: to_float(data[t][i]) for t in targets})
                    if with_geometry and data[schema.ATOMIC_NUMBERS][i] is not None \
                            and data[schema.POSITIONS][i] is not None:
                        z = np.asarray(data[schema.ATOMIC_NUMBERS][i], dtype=np.int64)
                        pos = np.asarray(data[schema.POSITIONS][i], dtype=np.float64)
                        if pos.size == 3 * z.size:
                            rec.atomic_numbers, rec.positions = z, pos.reshape(-1, 3)
                        else:
                            rec.error = f"given geometry has {z.size} atoms but {pos.size} coordinates"
                    yield rec
                    row_index += 1
        except (pa.ArrowException, OSError) as exc:
            raise InputFormatError(f"{source}: error while reading Parquet rows: {exc}") from exc

    return generate()


# --------------------------------------------------------------------------------------- entry

def _limited(records: Iterable[RawRecord], limit: int | None) -> Iterator[RawRecord]:
    for i, rec in enumerate(records):
        if limit is not None and i >= limit:
            return
        yield rec


def read_records(path_or_url: str | Path, smiles_column: str | None = None,
                 target_columns: list[str] | None = None, limit: int | None = None, *,
                 source: str | None = None, strict_targets: bool = True) -> Iterator[RawRecord]:
    """Stream the records of one molecule file or URL; see the module docstring for the rules.

    The file is checked (exists, known format, has a SMILES column, has the requested targets)
    before the iterator is returned, so an unreadable input fails before anything is processed.
    ``strict_targets=False`` keeps only those requested targets that the file has.
    """
    _check_limit(limit)
    source = str(path_or_url) if source is None else source
    fmt = format_of(urllib.parse.urlparse(str(path_or_url)).path if is_url(path_or_url) else str(path_or_url))
    if is_url(path_or_url):
        path = download(str(path_or_url))
    else:
        path = Path(path_or_url)
        if not path.is_file():
            raise InputFormatError(f"input file not found: {path}")
    try:
        if fmt in ("csv", "tsv"):
            records = _read_delimited(path, source, "," if fmt == "csv" else "\t", smiles_column,
                                      target_columns, strict_targets)
        elif fmt == "smi":
            records = _read_smi(path, source, target_columns, strict_targets)
        elif fmt == "sdf":
            records = _read_sdf(path, source, target_columns, strict_targets)
        else:
            records = _read_parquet(path, source, smiles_column, target_columns, strict_targets)
    except BaseException:
        if is_url(path_or_url):
            path.unlink(missing_ok=True)
        raise
    out = _limited(records, limit)
    if is_url(path_or_url):
        weakref.finalize(out, lambda p=path: p.unlink(missing_ok=True))
    return out
