"""Screenshots of the MLflow UI for the README: the runs list with a reproduction's parent run expanded, and the
compare view of its rows.

Not part of the project's dependencies: needs Debian's ``chromium`` and the ``playwright`` Python package (in any
venv; it drives /usr/bin/chromium, no browser download). With ``make mlflow-ui`` serving the store::

    python docs/mlflow_screenshots.py http://127.0.0.1:5000 <experiment id> <parent run id> <child ids, comma-separated> docs/

writes ``runs.png`` and ``compare.png`` into the folder (the README shows them as ``docs/mlflow_runs.png`` and
``docs/mlflow_compare.png``). ``python -m common.mlflow_ui --print-only`` prints the experiment and parent ids.
"""
import sys, json, time
from playwright.sync_api import sync_playwright
base, exp, parent, kids, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(","), sys.argv[5]
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
    pg = b.new_page(viewport={"width": 1500, "height": 950})
    pg.goto(f"{base}/#/experiments/{exp}/runs"); pg.wait_for_timeout(6000)
    # close the assistant side panel if present
    for sel in ['[aria-label="Close"]', 'button:has-text("Got it")']:
        try:
            pg.locator(sel).first.click(timeout=1500); pg.wait_for_timeout(500)
        except Exception:
            pass
    try:
        pg.locator('[aria-label="Close assistant"], [data-testid*="assistant"] button').first.click(timeout=1000)
    except Exception:
        pass
    # expand the parent run's children
    # expand the parent run's children: the small +/- box left of the run name
    box = pg.get_by_text("reproduce-", exact=False).first.bounding_box()
    if box:
        pg.mouse.click(box["x"] - 32, box["y"] + box["height"] / 2)
    else:
        print("no parent row found")
    pg.wait_for_timeout(2000)
    pg.screenshot(path=f"{out}/runs.png")
    ids = json.dumps(kids); ex = json.dumps([exp])
    pg.goto(f"{base}/#/compare-runs?runs={ids}&experiments={ex}"); pg.wait_for_timeout(8000)
    pg.screenshot(path=f"{out}/compare.png")
    b.close()
