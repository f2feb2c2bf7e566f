"""The Dagster UI in headless Chromium, as an operator sees it: `dagster-webserver -m
stock_pipeline.definitions` on an instance with two synced accounts. The asset graph shows
the four assets, the partitions page the accounts, and the documented one-account run
(Jobs → account_sync → Materialize all… → Custom → the account → Launch 1 run) submits
a run of that account only. Driven over the DevTools protocol (websockets)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import pytest
from websockets.sync.client import connect

from stock_pipeline_tests.helpers import (
    DagsterProcess,
    dagster_bin,
    free_port,
    register_account,
    seed,
    wait_for,
    write_stock,
)

pytestmark = pytest.mark.ui

ASSETS = ("stock_snapshot", "allegro_offers", "stock_diff", "stock_updates")
ACCOUNTS = ("shop-a", "shop-b")
PAGE_BOUND = 30
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
    "--remote-debugging-port=0",
)


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail(
            "chromium is not installed; .ci/run installs it (apt-get install -y --no-install-recommends chromium)"
        )
    pytest.skip("chromium not found (apt-get install -y --no-install-recommends chromium); CI runs this test")


class Page:
    """One Chromium tab over the DevTools protocol: navigate, read the rendered text,
    click like a mouse, take screenshots."""

    def __init__(self, chromium: str, profile: Path, log_path: Path):
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._stack = ExitStack()
        # With --remote-debugging-port=0 Chromium picks a port and writes it to this file.
        active_port = profile / "DevToolsActivePort"
        deadline = time.monotonic() + PAGE_BOUND
        while not (active_port.exists() and active_port.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(
                    "chromium did not open its DevTools port; its output:\n"
                    f"{log_path.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.1)
        port = active_port.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        self.ws = self._stack.enter_context(
            connect(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"], max_size=None)
        )
        self._id = 0

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *wanted: str, absent: tuple[str, ...] = ("Loading",), timeout: float = PAGE_BOUND) -> str:
        """The page's rendered text once it shows every `wanted` string and none of `absent`."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if all(w in text for w in wanted) and not any(a in text for a in absent):
                return text
            if time.monotonic() > deadline:
                missing = [w for w in wanted if w not in text] + [f"no {a!r}" for a in absent if a in text]
                self.fail(
                    f"the page at {self.evaluate('location.href')} does not show {missing} within {timeout} s; "
                    f"it shows:\n{text[:3000]}"
                )
            time.sleep(0.25)

    def open(self, url: str, *wanted: str) -> str:
        self.call("Page.navigate", url=url)
        return self.wait_for_text(*wanted)

    def click(self, label: str) -> None:
        """A real mouse click on the innermost visible element whose text is `label`."""
        point = self.evaluate(f"""(() => {{
            const label = {json.dumps(label)}, same = e => (e.innerText || '').trim() === label;
            const innermost = [...document.querySelectorAll('body *')]
                .filter(e => same(e) && ![...e.children].some(same));
            const boxes = innermost.map(e => e.getBoundingClientRect()).filter(r => r.width && r.height);
            const r = boxes[boxes.length - 1];  // dialogs and menus are portals at the end of <body>
            return r ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()""")
        if not point:
            self.fail(f"nothing labelled {label!r} to click on {self.evaluate('location.href')}:\n{self.text()[:3000]}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=point[0], y=point[1], button="left", clickCount=1)

    def fail(self, message: str) -> None:
        """Fails the test with a screenshot of the page beside the message."""
        shot = self.log_path.with_name("failure.png")
        try:
            message += f"\n(screenshot: {self.screenshot(shot)})"
        except (OSError, RuntimeError, TimeoutError):
            pass
        pytest.fail(message)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        self._stack.close()
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


class Webserver(NamedTuple):
    url: str
    process: DagsterProcess


def graphql(base_url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base_url}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.fixture
def synced_instance(settings, simulator):
    """Two accounts synced once through Dagster (which adds them as partitions)."""
    from dagster import DagsterInstance

    from stock_pipeline.cli.sync_runner import sync_accounts

    for account in ACCOUNTS:
        register_account(settings, simulator, account)
        seed(simulator, account, [("SKU-1", 1, "ACTIVE"), ("SKU-2", 1, "ACTIVE")])
    write_stock(settings.stock_database_url, [("SKU-1", 3), ("SKU-2", 4)])
    with DagsterInstance.get() as instance:
        summaries = sync_accounts(settings, list(ACCOUNTS), instance=instance)
        assert all(s.success for s in summaries), summaries
        yield instance


@pytest.fixture
def webserver(synced_instance, tmp_path):
    port = free_port()
    process = DagsterProcess(
        [dagster_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-m", "stock_pipeline.definitions"],
        tmp_path / "webserver.log",
    )
    base_url = f"http://127.0.0.1:{port}"

    def serving():
        try:
            with urllib.request.urlopen(f"{base_url}/server_info", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for("dagster-webserver answering /server_info", serving, 60, process, interval=0.5)
        # The first visit on localhost opens a newsletter dialog over the page; mark it seen.
        assert graphql(base_url, "mutation { setNuxSeen }") == {"data": {"setNuxSeen": True}}
        yield Webserver(base_url, process)
    finally:
        process.stop()


@pytest.fixture
def page(tmp_path):
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        tab = Page(chromium, Path(profile), tmp_path / "chromium.log")
        try:
            yield tab
        finally:
            tab.close()


def account_sync_runs(instance, account: str) -> list:
    from dagster import RunsFilter

    return instance.get_runs(RunsFilter(job_name="account_sync", tags={"dagster/partition": account}))


def test_ui_shows_the_assets_and_partitions_and_launches_one_account(page, synced_instance, webserver, tmp_path):
    url = webserver.url
    # The asset graph: stock_updates with everything upstream of it.
    page.open(
        f"{url}/assets/stock_updates?view=lineage&lineageScope=upstream&lineageDepth=3", *ASSETS, "allegro", "warehouse"
    )
    graph = page.screenshot(tmp_path / "asset-graph.png")
    assert graph.stat().st_size > 20_000, "the asset graph screenshot is nearly empty"

    # The catalog lists each asset with its description.
    from stock_pipeline.defs.assets import allegro_offers

    page.open(f"{url}/assets", *ASSETS, allegro_offers.descriptions_by_key[allegro_offers.key][:30])

    # The partitions page: the two accounts, both materialised by the sync.
    page.open(f"{url}/assets/stock_updates?view=partitions", *ACCOUNTS, "2 Partitions", "Materialized (2)")
    page.screenshot(tmp_path / "partitions.png")

    # One account from the UI, as docs/operating.md tells it.
    before = {account: len(account_sync_runs(synced_instance, account)) for account in ACCOUNTS}
    page.open(f"{url}/locations/stock_pipeline.definitions/jobs/account_sync", "Materialize all…")
    page.click("Materialize all…")
    page.wait_for_text("Launch runs to materialize 4 assets", "Partition selection", "Select a partition or create one")
    page.click("Select a partition or create one")
    page.wait_for_text(*ACCOUNTS, "Select all (2)")
    page.click("shop-b")
    page.wait_for_text("1 partition", "Launch 1 run")
    page.screenshot(tmp_path / "launch-one-account.png")
    page.click("Launch 1 run")
    wait_for(
        "a run of shop-b launched from the UI",
        lambda: len(account_sync_runs(synced_instance, "shop-b")) > before["shop-b"],
        PAGE_BOUND,
        webserver.process,
    )
    assert len(account_sync_runs(synced_instance, "shop-a")) == before["shop-a"]


def test_failed_runs_read_as_one_sentence_on_the_run_page(
    page, settings, simulator, synced_instance, webserver, monkeypatch, tmp_path
):
    """A guard hold, a bad query and a needs-reauthorisation run, each as the operator opens it."""
    from stock_pipeline.cli.sync_runner import sync_accounts
    from stock_pipeline.foundation.settings import load_settings

    def failed_run(expected_start: str) -> tuple[str, str]:
        [summary] = sync_accounts(load_settings(), ["shop-a"], instance=synced_instance)
        assert not summary.success and summary.error.startswith(expected_start), summary.error
        return summary.run_id, summary.error

    write_stock(settings.stock_database_url, [("SKU-1", 0), ("SKU-2", 0)])
    monkeypatch.setenv("STOCK_GUARD_MIN_RISKY_OFFERS", "1")
    held = failed_run("diff_guard held the writes for account shop-a")
    monkeypatch.setenv("STOCK_QUERY", "SELECT sku, stock FROM no_such_table")
    bad_query = failed_run("STOCK_QUERY")
    monkeypatch.setenv("STOCK_QUERY", "SELECT sku, stock FROM products")
    simulator.revoke_tokens("shop-a")
    simulator.expire_access_tokens("shop-a")
    reauth = failed_run("account 'shop-a' needs re-authorisation")

    for name, (run_id, sentence) in {"held": held, "bad-query": bad_query, "reauth": reauth}.items():
        text = page.open(f"{webserver.url}/runs/{run_id}", sentence[:60])
        page.screenshot(tmp_path / f"run-{name}.png")
        assert "DagsterAssetCheckFailedError" not in text
