"""The SMARTS of MOSES's medicinal-chemistry filters: 22 MCF alerts and 480 PAINS alerts.

Data, not code: ``molgnn/resources/moses_filters.tsv`` (columns ``set`` = MCF or PAINS, ``name``,
``smarts``) holds the two tables shipped inside the ``molsets`` 0.3.1 wheel on PyPI
(``moses/metrics/mcf.csv``, md5 98688e5b83bb64274256dab4640284b9; ``moses/metrics/wehi_pains.csv``, md5
e806ffcb4044e31eadd35344929ad68a), MIT licence, Copyright (c) 2018 Insilico Medicine. Whitespace padding
stripped, PAINS names taken from their ``<regId=...>`` labels, order kept.

These are the exact patterns MOSES used to build its data set and to score ``Filters``. RDKit's own
``Data/Pains/wehi_pains.csv`` is a later, edited version of the PAINS list and is *not* used here.
Loading checks ``FILTER_SMARTS_SHA256`` (the SMARTS strings, MCF then PAINS, joined by newlines), so
an edited table cannot silently change the ``Filters`` metric.
"""
from __future__ import annotations

import csv
import hashlib
import io
from importlib import resources

RESOURCE = "moses_filters.tsv"
FILTER_SMARTS_SHA256 = "e95f0df3d35da87f71572b9d9c5fa40eceaf6792c037ef883107dcffc2d2f2e4"
FILTER_SETS = ("MCF", "PAINS")


def load_filter_smarts(text: str | None = None) -> dict[str, tuple[tuple[str, str], ...]]:
    """``{"MCF": ((name, smarts), ...), "PAINS": (...)}`` from the packaged table (or ``text`` of one).

    Raises ValueError when a row is malformed, a set is unknown, or the SMARTS differ from MOSES's.
    """
    if text is None:
        text = resources.files("molgnn").joinpath("resources", RESOURCE).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    if reader.fieldnames != ["set", "name", "smarts"]:
        raise ValueError(f"{RESOURCE}: header {reader.fieldnames}, expected ['set', 'name', 'smarts']")
    tables: dict[str, list[tuple[str, str]]] = {s: [] for s in FILTER_SETS}
    for line, row in enumerate(reader, start=2):
        if row["set"] not in tables or not row["name"] or not row["smarts"] or None in row:
            raise ValueError(f"{RESOURCE} line {line}: expected set in {FILTER_SETS}, a name and one SMARTS, "
                             f"got {dict(row)}")
        tables[row["set"]].append((row["name"], row["smarts"]))
    joined = "\n".join(s for name in FILTER_SETS for _, s in tables[name])
    digest = hashlib.sha256(joined.encode()).hexdigest()
    if digest != FILTER_SMARTS_SHA256:
        raise ValueError(f"{RESOURCE}: SMARTS sha256 {digest}, expected MOSES's {FILTER_SMARTS_SHA256}")
    return {name: tuple(rows) for name, rows in tables.items()}


_TABLES = load_filter_smarts()
MCF_SMARTS: tuple[tuple[str, str], ...] = _TABLES["MCF"]
PAINS_SMARTS: tuple[tuple[str, str], ...] = _TABLES["PAINS"]
