"""Screenshots of the MLflow UI for the README: the runs list with a reproduction's parent run expanded, and the
compare view of its rows.

Not part of the project's dependencies: needs Debian's ``chromium`` and the ``playwright`` Python package (in any
venv; it drives /usr/bin/chromium, no browser download). With ``make mlflow-ui`` serving the store::

    python docs/mlflow_screenshots.py http://127.0.0.1:5000 <experiment id> <parent run id> <child ids, comma-separated> docs/

writes ``runs.png`` and ``compare.png`` into the folder (the README shows them as ``docs/mlflow_runs.png`` and
``docs/mlflow_compare.png``). ``python -m common.mlflow_ui --print-only`` prints the experiment and parent ids.
"""
from __future__ import annotations

import json
import sys

from playwright.sync_api import sync_playwright


def main(base: str, exp: str, parent: str, kids: list[str], out: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        page.goto(f"{base}/#/experiments/{exp}/runs")
        page.wait_for_timeout(6000)
        for sel in ('[aria-label="Close"]', 'button:has-text("Got it")'):  # the assistant panel, a tip
            try:
                page.locator(sel).first.click(timeout=1500)
                page.wait_for_timeout(500)
            except Exception:  # not shown in this MLflow version
                pass
        # expand the parent run's children: the small +/- box left of the run name
        box = page.get_by_text("reproduce-", exact=False).first.bounding_box()
        if box:
            page.mouse.click(box["x"] - 32, box["y"] + box["height"] / 2)
        else:
            print(f"no reproduction (parent run {parent}) in the runs list", file=sys.stderr)
        page.wait_for_timeout(2000)
        page.screenshot(path=f"{out}/runs.png")
        page.goto(f"{base}/#/compare-runs?runs={json.dumps(kids)}&experiments={json.dumps([exp])}")
        page.wait_for_timeout(8000)
        page.screenshot(path=f"{out}/compare.png")
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(","), sys.argv[5])
