"""The run report as one self-contained HTML page, ``report.html`` beside ``report.md``.

The Markdown report is rendered (markdown-it, tables on) with its figures inlined as data URIs, so
the single file opens anywhere, MLflow's artifact view included. MLflow run ids become links to the
MLflow UI and the Prefect flow run a link to the Prefect UI. The ranked candidates get their own
table: each molecule drawn (RDKit SVG), sortable by any column, filterable by text and by domain.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import pandas as pd

HTML_FILE = "report.html"
MLFLOW_UI = "http://127.0.0.1:5000"    # `mlflow ui`'s default address (README: Tracking)
PREFECT_UI = "http://127.0.0.1:4200"   # a local Prefect server's default address
MAX_DRAWN = 300                        # candidates drawn in the page (the CSV beside it has all)

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}
_RUN_ID = re.compile(r"<code>([0-9a-f]{32})</code>")
_FLOW_RUN = re.compile(r"<code>([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})</code>")
_IMG = re.compile(r'src="([^"]+)"')

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1400px;margin:0 auto;padding:1em 2em;color:#222}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:middle}
th{background:#f3f3f3}
img{max-width:100%}
code{background:#f6f6f6;padding:0 2px}
#candidates th{cursor:pointer;user-select:none;position:sticky;top:0}
#candidates th[aria-sort=ascending]::after{content:" \\25B2"}
#candidates th[aria-sort=descending]::after{content:" \\25BC"}
#candidates td.mol{padding:0;background:#fff}
.out{background:#fff4f0}
.controls{margin:.5em 0}
"""

_SCRIPT = """
(function(){
  const table=document.getElementById('candidates'); if(!table) return;
  const body=table.tBodies[0], heads=[...table.tHead.rows[0].cells];
  const key=(row,i)=>{const c=row.cells[i]; const v=c.dataset.value!==undefined?c.dataset.value:c.textContent;
    const n=parseFloat(v); return (v.trim()!=='' && !isNaN(n) && isFinite(v))?n:v.toLowerCase();};
  heads.forEach((th,i)=>th.addEventListener('click',()=>{
    const asc=th.getAttribute('aria-sort')!=='ascending';
    heads.forEach(h=>h.removeAttribute('aria-sort')); th.setAttribute('aria-sort',asc?'ascending':'descending');
    const rows=[...body.rows].sort((a,b)=>{const x=key(a,i),y=key(b,i);
      if(typeof x!==typeof y) return (typeof x==='number'?-1:1);
      return (x<y?-1:x>y?1:0)*(asc?1:-1);});
    rows.forEach(r=>body.appendChild(r));}));
  const text=document.getElementById('filter'), dom=document.getElementById('in-domain-only');
  const count=document.getElementById('shown');
  function apply(){const q=text.value.toLowerCase(); let n=0;
    for(const r of body.rows){const ok=(!q||r.textContent.toLowerCase().includes(q))&&(!dom.checked||r.dataset.inDomain!=='false');
      r.hidden=!ok; if(ok) n++;}
    count.textContent=n;}
  text.addEventListener('input',apply); dom.addEventListener('change',apply); apply();
})();
"""


def _data_uri(path: Path) -> str | None:
    mime = _MIME.get(path.suffix.lower())
    if mime is None or not path.is_file():
        return None
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _inline_images(body: str, folder: Path) -> str:
    def repl(m: re.Match) -> str:
        src = html.unescape(m.group(1))
        if src.startswith(("data:", "http:", "https:")):
            return m.group(0)
        uri = _data_uri(folder / src)
        return f'src="{uri}"' if uri else m.group(0)

    return _IMG.sub(repl, body)


def _link_runs(body: str, meta: dict[str, Any]) -> str:
    mlflow_ui = str(meta.get("mlflow_ui_url") or MLFLOW_UI).rstrip("/")
    prefect_ui = str(meta.get("prefect_ui_url") or PREFECT_UI).rstrip("/")
    exp = meta.get("experiment_id") or "0"
    body = _RUN_ID.sub(lambda m: f'<a href="{mlflow_ui}/#/experiments/{exp}/runs/{m.group(1)}" '
                                 f'title="open in the MLflow UI"><code>{m.group(1)}</code></a>', body)
    return _FLOW_RUN.sub(lambda m: f'<a href="{prefect_ui}/runs/flow-run/{m.group(1)}" '
                                   f'title="open in the Prefect UI"><code>{m.group(1)}</code></a>', body)


def molecule_svg(smiles: str, size: tuple[int, int] = (180, 130)) -> str:
    """An inline SVG drawing of ``smiles`` (empty when RDKit cannot parse it)."""
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return ""
    drawer = rdMolDraw2D.MolDraw2DSVG(*size)
    drawer.drawOptions().clearBackground = False
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    svg = drawer.GetDrawingText()
    svg = svg[svg.index("<svg"):]    # drop the XML declaration: the SVG sits inside HTML
    return svg.replace("<svg", f'<svg role="img" aria-label="{html.escape(smiles)}"', 1)


def _cell(value: Any, digits: int = 3) -> tuple[str, str]:
    """(shown text, sort value) of one table value."""
    if value is None or (isinstance(value, float) and value != value):
        return "–", ""
    if isinstance(value, (bool,)) or str(value) in ("True", "False"):
        return str(value).lower(), str(value).lower()
    if isinstance(value, (int, float)):
        return (f"{value:.{digits}g}" if isinstance(value, float) else str(value)), repr(float(value))
    return html.escape(str(value)), html.escape(str(value))


def candidates_table(preds: pd.DataFrame, limit: int = MAX_DRAWN,
                     extra: tuple[tuple[str, str], ...] = ()) -> str:
    """The ranked candidates as a sortable, filterable HTML table with a drawing of each molecule;
    ``extra``: further (column, label) pairs shown when present (e.g. the design loop's lineage)."""
    from molgnn.chem.properties import QED, SA
    from molgnn.data import schema

    targets = [c[:-len("_mean")] for c in preds.columns if c.endswith("_mean")]
    columns: list[tuple[str, str]] = [("rank", "rank")]
    for t in targets:
        columns += [(f"{t}_mean", f"{t} mean"), (f"{t}_std", f"{t} std")]
        if f"{t}_low90" in preds.columns:
            columns += [(f"{t}_low90", f"{t} low 90 %"), (f"{t}_high90", f"{t} high 90 %")]
    for col, label in (("tier", "tier"), ("in_domain", "in domain"), ("domain_reason", "domain reason"),
                       (QED, "QED"), (SA, "SA"), ("generator", "generator"), *extra):
        if col in preds.columns:
            columns.append((col, label))
    head = "".join(f"<th scope=col>{html.escape(label)}</th>" for label in ["structure", "SMILES"]
                   + [lab for _, lab in columns])
    rows = []
    for rec in preds.head(limit).to_dict("records"):
        smi = str(rec.get(schema.SMILES, ""))
        in_domain = str(rec.get("in_domain", "")).lower()
        cells = [f'<td class=mol data-value="">{molecule_svg(smi)}</td>',
                 f"<td><code>{html.escape(smi)}</code></td>"]
        for col, _ in columns:
            shown, value = _cell(rec.get(col))
            cells.append(f'<td data-value="{value}">{shown}</td>')
        cls = ' class=out' if in_domain == "false" else ""
        rows.append(f'<tr data-in-domain="{html.escape(in_domain)}"{cls}>' + "".join(cells) + "</tr>")
    more = (f" The first {limit} of {len(preds)} are shown; the CSV beside this page has all."
            if len(preds) > limit else "")
    return (f'<h2 id="candidates-table">Ranked candidates</h2>'
            f"<p>Click a column to sort; type to filter (any text in the row).{more}</p>"
            '<div class=controls><input id=filter type=search placeholder="filter, e.g. a SMILES fragment" '
            'aria-label="filter candidates"> <label><input id=in-domain-only type=checkbox> in domain only</label> '
            '— <span id=shown></span> shown</div>'
            f'<table id=candidates><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def write_html(folder: str | Path, meta: dict[str, Any], markdown: str, candidates: pd.DataFrame | None,
               name: str = HTML_FILE, title: str = "molgnn run report",
               extra_columns: tuple[tuple[str, str], ...] = ()) -> Path:
    """Write ``folder/name`` from a report's Markdown (images relative to ``folder``)."""
    from markdown_it import MarkdownIt

    folder = Path(folder)
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    body = _link_runs(_inline_images(body, folder), meta)
    table = candidates_table(candidates, extra=extra_columns) if candidates is not None and len(candidates) else ""
    title = html.escape(f"{title} {meta.get('pipeline_run') or ''}".strip())
    page = (f'<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>'
            f'<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<style>{_STYLE}</style></head><body>"
            + (('<p><a href="#candidates-table">Ranked candidates (interactive table)</a></p>') if table else "")
            + body + table + f"<script>{_SCRIPT}</script></body></html>")
    path = folder / name
    path.write_text(page, encoding="utf-8")
    return path
