"""The MLflow UI, checked in a real browser: `make ui` on the tiny grid's store, opened by headless Chromium
(Debian package `chromium`, installed here if missing). The test reads the rendered page (DOM) and saves a
screenshot of each page it checks under <tmp>/screens/: `make ui`'s link opens the runs table on the cells, one row
each with sparsity, clean and worst-case robust accuracy as columns; its charts link shows a scatter of each against
sparsity with a point per cell; a cell's run page shows its metrics and its config artifact."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import tiny_store
from benchmark import tracking, ui_view

# The expand/collapse button of a parent run's row in the runs table (MLflow 3.17's component id).
EXPANDER = 'button[data-component-id$="runnamecellrenderer.tsx_46"]'


def chromium() -> str:
    """Path of a Chromium binary, installing the Debian package if needed; skips the test where that fails."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("Chromium is not installed and cannot be (needs apt-get as root): apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"Chromium could not be installed ({' '.join(command)}): {done.stderr.strip()[-300:]}")
    return shutil.which("chromium")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4): no network port, no extra
    package. One page; `evaluate` runs JavaScript in it."""

    def __init__(self, binary: str, profile: Path, width: int = 1600, height: int = 1000):
        # the child's ends, above 4 so that placing them at 3 and 4 cannot overwrite one with the other
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        child_r, child_w = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)

        def wire():  # the protocol's fixed descriptors in the child (dup2 makes them inheritable)
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.process = subprocess.Popen(
            # a new profile: the UI keeps its page state in the browser's storage; no background connections
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             f"--user-data-dir={profile}", "--disable-quic", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--window-size={width},{height}", "about:blank"],
            close_fds=False, preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        for fd in (child_r, child_w):
            os.close(fd)
        self._buffer, self._next_id = b"", 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_chrome, 1 << 20)
                assert chunk, "Chromium closed the DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, (method, reply["error"])
                return reply["result"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for_text(self, *texts: str, timeout: float = 90) -> str:
        """The page's visible text once it contains every one of `texts` (the UI renders asynchronously)."""
        deadline, text = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            text = self.evaluate("document.body ? document.body.innerText : ''") or ""
            if all(t in text for t in texts):
                return text
            time.sleep(0.5)
        raise AssertionError(f"page never showed {texts}; it shows:\n{text[:3000]}")

    def wait_for(self, what: str, expression: str, done, timeout: float = 90):
        """The value of `expression` once `done(value)` holds."""
        deadline, value = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if done(value):
                return value
            time.sleep(0.5)
        raise AssertionError(f"page never showed {what}; last seen: {value}")

    def save(self, out: Path, name: str) -> Path:
        """Screenshot and DOM dump of the page, for a person to look at."""
        out.mkdir(parents=True, exist_ok=True)
        png = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])
        (out / f"{name}.png").write_bytes(png)
        (out / f"{name}.html").write_text(self.evaluate("document.documentElement.outerHTML"))
        return out / f"{name}.png"

    def close(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ui(tmp_path, store):
    """`make ui` on the tiny grid's store, on a free loopback port; always stopped."""
    port = _free_port()
    log = open(tmp_path / "make-ui.log", "w")
    server = subprocess.Popen(["make", "-o", ".venv/.installed", "ui", f"TRACKING_URI={store.uri}",  # -o: no venv
                               f"EXPERIMENT={store.experiment}", f"UI_PORT={port}"],
                              cwd=tiny_store.ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, (tmp_path / "make-ui.log").read_text()
            time.sleep(0.5)
        yield store, base, (tmp_path / "make-ui.log").read_text()
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make, mlflow ui and its uvicorn worker
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=5)
        log.close()


def test_make_ui_opens_on_the_cells_and_their_charts_and_a_cell_page_shows_metrics_and_config(ui, tmp_path):
    store, base, printed = ui
    # wide enough that the table renders every column (it leaves out the ones scrolled out of sight)
    browser = Browser(chromium(), tmp_path / "chromium-profile", width=2400, height=1100)
    screens = tmp_path / "screens"
    try:
        client = MlflowClient(store.uri)
        experiment_id = client.get_experiment_by_name(store.experiment).experiment_id
        link = f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={ui_view.VIEW_ID}" \
               "&workflowType=machine_learning"
        assert link in printed and f"{link}{tracking.UI_CHARTS}" in printed  # the cells, and their charts
        cells = sorted(client.search_runs([experiment_id], "tags.cell_hash != ''"), key=lambda r: r.info.run_name)
        names, cell_ids = [r.info.run_name for r in cells], [r.info.run_id for r in cells]
        assert len(names) == tiny_store.N_CELLS

        # the runs table: a row per cell, none under a collapsed grid row, the measured metrics as columns
        browser.open(link)
        text = browser.wait_for_text(*names, f"{tiny_store.N_CELLS} matching runs")
        assert "Overview" not in text.split("Runs")[0]  # on the training runs, not the GenAI overview
        assert "grid:tiny" not in text and browser.evaluate(f"document.querySelectorAll('{EXPANDER}').length") == 0
        logged = client.get_run(cell_ids[0]).data.metrics
        worst = sorted((k for k in logged if k.startswith("robust/worst/eps_")), key=lambda k: float(k.split("_")[-1]))
        metrics = ["sparsity/achieved", "clean/acc", *worst]
        assert len(worst) == 4
        browser.wait_for(f"the columns {metrics}", "[...document.querySelectorAll('.ag-header-cell')]"
                         ".map(e => e.getAttribute('col-id')).filter(i => i.startsWith('metrics.'))",
                         lambda ids: ids and sorted(ids) == sorted(f"metrics.`{m}`" for m in metrics))
        browser.save(screens, "runs")

        # the charts: a scatter per security metric (and clean accuracy) vs sparsity, a point per cell in each
        browser.open(f"{link}{tracking.UI_CHARTS}")
        browser.wait_for_text("Security vs sparsity")
        points = "document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length"
        browser.wait_for(f"{5 * tiny_store.N_CELLS} points", points, lambda n: n == 5 * tiny_store.N_CELLS)
        titles = browser.evaluate("[...document.querySelectorAll('[data-testid=experiment-view-compare-runs-card]')]"
                                  ".map(e => e.innerText.split('\\n')[0])")
        assert titles[:5] == [f"sparsity/achieved vs. {m}" for m in [*metrics[2:], "clean/acc"]], titles
        browser.save(screens, "charts")

        cell = client.search_runs([experiment_id], f"attributes.run_name = '{names[0]}'")[0]
        browser.open(f"{base}/#/experiments/{experiment_id}/runs/{cell.info.run_id}?workflowType=machine_learning")
        page = browser.wait_for_text(names[0], "clean/acc", "sparsity/achieved")
        browser.save(screens, "run")
        assert "pruning.method" in page  # the params table
        browser.open(f"{base}/#/experiments/{experiment_id}/runs/{cell.info.run_id}/artifacts"
                     f"?workflowType=machine_learning")
        browser.wait_for_text("config.yaml", "sparsity_per_layer.json")
        browser.save(screens, "artifacts")
    finally:
        browser.close()
        print(f"screenshots: {screens}")
