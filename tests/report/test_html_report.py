"""The HTML run report: self-contained, run ids linked, candidates drawn, sortable and filterable;
the last checked in a real headless browser (Debian's Chromium driven by playwright)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from molgnn.report.html_report import HTML_FILE, write_html

RUN = "0123456789abcdef0123456789abcdef"
FLOW = "8be99386-24fa-467e-9b77-49dc8eb08987"


@pytest.fixture
def report_dir(tmp_path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (tmp_path / "images").mkdir()
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "images" / "curve.png")
    plt.close(fig)
    return tmp_path


def candidates() -> pd.DataFrame:
    return pd.DataFrame({
        "rank": [1, 2, 3, 4],
        "smiles": ["c1ccccc1O", "CCO", "CC(=O)Nc1ccc(O)cc1", "ClCCl"],
        "gap_mean": [7.5, 9.25, 6.0, 10.5], "gap_std": [0.1, 0.3, 0.2, 0.05],
        "in_domain": [True, True, True, False], "domain_reason": ["", "", "", "elements: Cl"],
        "qed": [0.45, 0.41, 0.6, 0.4], "generator": ["vae", "diffusion", "vae", "vae"]})


MARKDOWN = (f"# molgnn run report\n\n| | |\n|---|---|\n| pipeline MLflow run | `{RUN}` |\n"
            f"| Prefect flow run | `{FLOW}` |\n\n![learning curve](images/curve.png)\n")


def test_page_stands_alone_and_links_runs(report_dir):
    page = write_html(report_dir, {"experiment_id": "7"}, MARKDOWN, candidates()).read_text()
    assert 'src="images/' not in page and "data:image/png;base64," in page
    assert f'href="http://127.0.0.1:5000/#/experiments/7/runs/{RUN}"' in page
    assert f'href="http://127.0.0.1:4200/runs/flow-run/{FLOW}"' in page
    assert page.count("<svg") == 4, "every candidate drawn"
    assert '<tr data-in-domain="false" class=out>' in page


def test_without_candidates_there_is_no_table(report_dir):
    page = write_html(report_dir, {}, MARKDOWN, None).read_text()
    assert "id=candidates" not in page and "<table>" in page


def test_in_chromium_the_page_loads_sorts_filters_and_renders_every_image(report_dir, browser_page):
    path = write_html(report_dir, {}, MARKDOWN, candidates())
    assert path.name == HTML_FILE
    page, errors = browser_page(path)
    # every raster image decoded, every structure drawn
    sizes = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert sizes and all(w > 0 for w in sizes)
    boxes = page.eval_on_selector_all("#candidates svg", "els => els.map(e => e.getBBox().width)")
    assert len(boxes) == 4 and all(w > 0 for w in boxes)
    rows = page.locator("#candidates tbody tr")
    assert rows.count() == 4
    smiles = lambda: [c.strip() for c in page.locator("#candidates tbody tr td:nth-child(2)").all_inner_texts()]
    header = page.locator("#candidates th", has_text="gap mean")
    header.click()
    assert smiles() == ["CC(=O)Nc1ccc(O)cc1", "c1ccccc1O", "CCO", "ClCCl"]     # ascending gap
    header.click()
    assert smiles() == ["ClCCl", "CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]     # descending
    page.fill("#filter", "vae")
    assert page.locator("#candidates tbody tr:visible").count() == 3
    page.check("#in-domain-only")
    assert page.locator("#candidates tbody tr:visible").count() == 2
    assert page.inner_text("#shown") == "2"
    assert errors == []
