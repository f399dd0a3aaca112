"""report.html in a real headless browser: the system Chromium driven by Playwright.

It opens the report that ``poser report <dir>`` writes for a tiny main-job folder (tests/report_fixture.py: no
training) and checks that the page loads without console errors, that every image decodes (naturalWidth > 0),
and that the tables, figures and sections are there. It skips, saying why, when Playwright or Chromium is missing;
CI installs both (.ci/setup: `apt-get install chromium`; the dev extra: playwright).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from agents.pipeline import report_from_dir
from tests.report_fixture import make_run_dir

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is missing: `pip install playwright` (the dev extra has it)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH: `apt-get install chromium` (Debian; .ci/setup does it in CI)")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = make_run_dir(tmp_path_factory.mktemp("main"))
    report_from_dir(d)
    return d / "report.html"


def test_report_html_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight,"
                " complete: i.complete, data: i.src.startsWith('data:image/')}))")
            headings = page.locator("h2").all_inner_texts()
            n_tables = page.locator("table").count()
            n_figures = page.locator("figure").count()
            claims_rows = page.locator("#claims table tbody tr").count()
            rliable_rows = page.locator("#rliable table tbody tr").count()
            gallery = page.locator("#examples .gallery figure").count()
            page.screenshot(path=str(tmp_path / "report_top.png"))
        finally:
            browser.close()
    assert errors == []
    # self-contained: the only request is the page itself (every image is a data: URI)
    assert [u for u in requests if not u.startswith("data:")] == [report.as_uri()]
    assert images and all(i["complete"] and i["w"] > 0 and i["h"] > 0 and i["data"] for i in images), images
    alts = " | ".join(i["alt"] for i in images)
    for expected in ("Interquartile mean", "Probability of improvement", "Performance profiles", "Training episodes",
                     "Judge pass rate per tag", "calls per expert", "example-0 GIF", "example-0 contact sheet"):
        assert expected in alts, (expected, alts)
    assert {"Claims checked", "Results (test split)", "Aggregate results (rliable)", "Learning curves", "Per tag",
            "Expert usage", "Example episodes", "Configuration"} <= set(headings)
    assert n_tables >= 4 and n_figures == len(images) >= 10
    assert claims_rows >= 3 and rliable_rows >= 6 + 5  # 6 methods' IQM rows, 5 probabilities of improvement
    assert gallery == 4  # two examples, each a GIF and a contact sheet
    assert (tmp_path / "report_top.png").stat().st_size > 10_000
    if os.environ.get("POSER_REPORT_SCREENSHOT"):  # keep the picture (a path) for a human to look at
        shutil.copy(tmp_path / "report_top.png", os.environ["POSER_REPORT_SCREENSHOT"])
