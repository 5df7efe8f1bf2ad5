"""ComfyUI's web app in a real browser against `sld serve --frontend` (issue 20's acceptance).

Headless Chromium (Debian's /usr/bin/chromium, or $SLD_CHROMIUM), driven by Playwright for Python,
opens the page of a fresh server that requires a token (given once, as /?token=) and does what a user
does: closes the first-start templates dialog, opens workflows/sld_txt2img.json with Ctrl+O and the
file chooser, queues it with Ctrl+Enter and opens the queue panel (Q), where the finished image must
appear. The prompt the page sent must be the shipped
API workflow, node for node. Then the other panels (workflows, nodes, models, logs) are opened, and
every node the server describes is placed on a canvas: the app must build each one. No error may reach
the browser console, and no request to the server may fail.

Without Chromium, Playwright or the comfyui-frontend-package wheel the test is not run and the terminal
summary says so ("NOT RUN: ..."). SLD_FRONTEND_SCREENSHOT=PATH keeps the screenshot of the editor with
the workflow and its image (docs/images/sld_serve_frontend.png is made so).
"""
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from .conftest import WORKFLOWS, Server, load_api

CHROMIUM = os.environ.get("SLD_CHROMIUM", "/usr/bin/chromium")
WORKFLOW = WORKFLOWS / "sld_txt2img.json"
TOKEN = "browser-test-token"


def missing():
    """Why the browser test cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install playwright)"
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SLD_CHROMIUM)"
    if importlib.util.find_spec("comfyui_frontend_package") is None:
        return "the comfyui-frontend-package wheel is not installed (pip install 'comfyui-sld[frontend]')"
    return None


class _SayNotRun:
    """A plugin registered at run time: one loud line in the terminal summary, like tests/conftest.py's."""

    def __init__(self, line):
        self.line = line

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_line(self.line, yellow=True, bold=True)


@pytest.fixture
def browser_page(request):
    reason = missing()
    if reason:
        line = f"NOT RUN: {request.node.nodeid} (ComfyUI's web app in a real browser) - {reason}"
        request.config.pluginmanager.register(_SayNotRun(line), "sld-frontend-not-run")
        pytest.skip(line)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(90_000)  # bounds for a busy machine; an idle one takes seconds
            yield page
        finally:
            browser.close()


def test_the_web_app_opens_queues_and_shows_the_image_without_console_errors(browser_page, tmp_path):
    page, problems = browser_page, []
    server = Server(tmp_path, "--frontend", "--auth-token", TOKEN)
    server.token = TOKEN  # for this test's own requests; the page gets it once, from the address
    try:
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" or "Invalid ComfyNodeDef" in m.text else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.request.method} {r.url}")
                if r.status >= 400 and r.url.startswith(server.url) else None)
        started = time.monotonic()

        page.goto(f"{server.url}/?token={TOKEN}")  # kept in a cookie: every request of the app needs it
        assert page.url == f"{server.url}/"
        page.wait_for_function("() => window.comfyAPI?.app?.app?.vueAppReady === true")
        dialog = page.get_by_role("dialog")  # a first start offers templates: the shipped workflows
        dialog.get_by_text("sld_txt2img", exact=True).wait_for()
        dialog.get_by_role("button", name="Close").click()
        dialog.wait_for(state="hidden")

        page.locator("#graph-canvas").click(position={"x": 60, "y": 700})  # keys go to the canvas

        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Control+o")
        chooser.value.set_files(str(WORKFLOW))
        page.wait_for_function("() => window.app.graph.nodes.length === 8"
                               " && window.app.graph.nodes.some(n => n.type === 'SLDKSampler')")
        with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as posted:
            page.keyboard.press("Control+Enter")
        prompt_id = posted.value.json()["prompt_id"]
        page.keyboard.press("q")
        shown = page.locator(".comfy-vue-side-bar-container img[src*='filename=sld_txt2img_']").first
        shown.wait_for()
        elapsed = time.monotonic() - started

        entry = server.wait(prompt_id)
        assert entry["status"]["status_str"] == "success", entry["status"]
        (image,) = entry["outputs"]["8"]["images"]
        assert f"filename={image['filename']}" in shown.get_attribute("src")
        assert (server.output / image["subfolder"] / image["filename"]).is_file()
        sent = entry["prompt"][2]
        assert {k: (v["class_type"], v["inputs"]) for k, v in sent.items()} == \
            {k: (v["class_type"], v["inputs"]) for k, v in load_api("sld_txt2img").items()}

        page.wait_for_timeout(500)  # the node's own preview is drawn on the next frame
        page.screenshot(path=os.environ.get("SLD_FRONTEND_SCREENSHOT") or str(tmp_path / "editor.png"))

        for key in ("w", "n", "m", "Control+`"):  # the workflows, node and model panels and the logs: each
            page.keyboard.press(key)              # asks the server for more at its first opening
            page.wait_for_timeout(1000)
        every_node_builds(page, server)
        assert not problems, "\n".join(problems)
        print(f"web app: loaded, opened, queued and shown in {elapsed:.1f} s")
    finally:
        page.close()  # its WebSocket first, so the server stops at once
        server.stop()


def every_node_builds(page, server):
    """Each node /object_info describes, placed on the start-up canvas: the app must accept every
    definition (it drops one it cannot validate) and build the node with its widgets."""
    status, described, _ = server.request("GET", "/object_info")
    assert status == 200 and described
    graph = {"last_node_id": len(described), "last_link_id": 0, "links": [], "groups": [], "config": {},
             "extra": {}, "version": 0.4,
             "nodes": [{"id": i + 1, "type": name, "pos": [40 + 260 * (i % 6), 40 + 320 * (i // 6)], "size": [240, 200],
                        "flags": {}, "order": i, "mode": 0, "properties": {}}
                       for i, name in enumerate(described)]}
    built = page.evaluate("""async (graph) => {
        await window.app.loadGraphData(graph);
        return window.app.graph.nodes.map(n => [n.type, n.constructor.nodeData?.name ?? null, n.widgets?.length ?? 0]);
    }""", json.loads(json.dumps(graph)))
    assert [b[0] for b in built] == list(described)
    assert [b[1] for b in built] == list(described), "the app has no definition for some nodes"
    for name, _, widgets in built:
        spec = described[name]["input"]
        widget_inputs = [n for section in spec.values() for n, s in section.items()
                         if (isinstance(s[0], list) or s[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"))
                         and not (len(s) > 1 and s[1].get("forceInput"))]
        assert widgets >= len(widget_inputs), (name, widgets, widget_inputs)
