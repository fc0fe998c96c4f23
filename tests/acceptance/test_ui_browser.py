"""The dashboard in a real headless Chromium, on a SQLite database made by real runs.

`hephaestus ui` runs as a user runs it (a process, bound to 127.0.0.1, with a
token); a LocalRunner in another process (`hephaestus worker`) does the work.
The browser lists the instances, filters them, opens a failed instance, sees
its graph and traceback, is refused (HTTP 403) without the token, signs in,
retries it and watches it complete. Screenshots of the pages go to
docs/images/ for docs/ui.md.

Needs Debian's `chromium` and `chromium-driver` and Selenium; without them
the tests skip, except under `CI=true`, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_fixtures.flows import ApprovalFlow, FailingFlow, PrintFlow
from worker_process import worker_process

import hephaestus as hephaestus_package
from hephaestus import Hephaestus, LocalRunner, SQLiteStorage, Status

PROJECT = Path(__file__).parent
SOURCE = Path(hephaestus_package.__file__).resolve().parent.parent
IMAGES = PROJECT.parent.parent / "docs" / "images"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "correct-horse-battery"


def browser_or_skip() -> None:
    """Skip without a browser, but fail under CI: there the tests must run."""
    problems = [f"{path} is missing" for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        problems.append("selenium is not installed")
    if problems:
        message = (
            "the browser tests need Debian's chromium and chromium-driver and selenium: "
            + "; ".join(problems)
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database written by real runs: waiting, completed, cancelled and failed instances."""
    db = tmp_path_factory.mktemp("ui") / "ui.db"

    async def run() -> None:
        runner = LocalRunner()
        async with Hephaestus(storage=SQLiteStorage(db), runner=runner) as app:
            for number in range(1, 9):
                await app.start_instance(
                    ApprovalFlow, {"title": f"report {number}"}, id=f"doc::r{number}"
                )
            await app.start_instance(PrintFlow, {"jammed": False}, id="print::ok")
            await app.start_instance(FailingFlow, {}, id="job::one")
            await runner.wait_idle(timeout=20)
            await app.cancel("doc::r8")
            await app.start_instance(PrintFlow, {"jammed": True}, id="print::p1")
            await runner.wait_idle(timeout=20)

    asyncio.run(run())
    return db


def serve(db: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """`hephaestus ui` on `db` in a process of its own, once it answers."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLUMNS")}
    environ.update(PYTHONPATH=str(SOURCE))
    environ.pop("HEPHAESTUS_UI_TOKEN", None)
    command = [sys.executable, "-m", "hephaestus.cli", "ui", "--storage", f"sqlite:///{db}"]
    command += ["--app", "cli_fixtures.flows", "--port", str(port), "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:  # the process keeps its own handle
        process = subprocess.Popen(
            [*command, *extra], cwd=PROJECT, env=environ, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/", timeout=2):
                    return process, base
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    log.seek(0)
                    pytest.fail(f"the dashboard did not start: {log.read().decode()}")
                time.sleep(0.1)


@pytest.fixture(scope="module")
def dashboard(database: Path) -> Iterator[str]:
    process, base = serve(database, "--token", TOKEN)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# What the screenshots must not show: where this checkout lives and which machine ran them.
SCRUB_JS = """
const pairs = arguments[0];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  let text = node.nodeValue;
  for (const [from, to] of pairs) { text = text.split(from).join(to); }
  node.nodeValue = text;
}
"""


def shoot(driver: Any, name: str) -> None:
    """A screenshot of the whole page for docs/ui.md (local paths and host names replaced)."""
    replacements = [
        [str(SOURCE.parent) + os.sep, ""],
        [str(PROJECT) + os.sep, "tests/acceptance/"],
        [socket.gethostname(), "worker-1"],
    ]
    driver.execute_script(SCRUB_JS, replacements)
    IMAGES.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 40, 700), 2400))
    driver.save_screenshot(str(IMAGES / name))
    driver.set_window_size(1280, 1000)


def row_ids(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [
        row.get_attribute("data-id")
        for row in driver.find_elements(By.CSS_SELECTOR, "#rows tr[data-id]")
    ]


def stored_status(db: Path, instance_id: str) -> Status:
    async def read() -> Status:
        async with SQLiteStorage(db) as storage:
            return (await storage.get(instance_id)).status

    return asyncio.run(read())


def post(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_list_filter_open_a_failure_be_refused_sign_in_retry_and_watch_it_complete(
    browser: Any, dashboard: str, database: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.ui import Select, WebDriverWait

    db = database
    wait = WebDriverWait(browser, 30)

    # The list: every instance, newest change first, with counts by status.
    browser.get(dashboard + "/")
    ids = row_ids(browser)
    assert len(ids) == 11
    assert ids[0] == "print::p1"  # the last one changed
    counts = browser.find_element(By.ID, "counts").text
    assert "failed 2" in counts
    assert "waiting 7" in counts
    assert "cancelled 1" in counts
    assert browser.find_element(By.ID, "read-only").is_displayed()
    shoot(browser, "ui-instances.png")

    # Filter: failed ones, then by id prefix.
    Select(browser.find_element(By.ID, "f-status")).select_by_value("failed")
    browser.find_element(By.ID, "f-apply").click()
    wait.until(lambda d: "status=failed" in d.current_url)
    assert sorted(row_ids(browser)) == ["job::one", "print::p1"]
    search = browser.find_element(By.ID, "f-q")
    search.send_keys("print::")
    browser.find_element(By.ID, "f-apply").click()
    wait.until(lambda d: "q=print" in d.current_url)
    assert row_ids(browser) == ["print::p1"]

    # Open the failed instance: its graph marks the failed step, the traceback is shown.
    browser.find_element(By.LINK_TEXT, "print::p1").click()
    wait.until(until.presence_of_element_located((By.ID, "graph")))
    failed_node = browser.find_element(By.CSS_SELECTOR, '#graph g.node[data-step="print_pages"]')
    assert failed_node.get_attribute("data-mark") == "failed"
    done_node = browser.find_element(By.CSS_SELECTOR, '#graph g.node[data-step="done"]')
    assert done_node.get_attribute("data-mark") == "not-taken"
    traceback = browser.find_element(By.ID, "traceback").text
    assert "RuntimeError: the printer is out of paper" in traceback
    assert "Traceback (most recent call last)" in traceback

    # Without the token: the page says it is read-only, and the action is refused.
    notice = browser.find_element(By.ID, "actions-read-only").text
    assert "Read-only" in notice
    assert "403" in notice
    assert not browser.find_element(By.ID, "retry").is_enabled()
    shoot(browser, "ui-instance-failed.png")
    browser.execute_script("document.getElementById('retry').form.submit()")
    refused = wait.until(until.presence_of_element_located((By.ID, "refused")))
    assert "Action refused (HTTP 403)" in browser.find_element(By.TAG_NAME, "h1").text
    assert "did not present the dashboard's token" in refused.text
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/instances/print::p1/retry', {method: 'POST'}).then(r => done(r.status));"
    )
    assert status == 403
    assert post(dashboard + "/instances/print::p1/retry") == 403
    assert post(dashboard + "/instances/print::p1/retry", {"X-Hephaestus-Token": "wrong"}) == 403
    assert stored_status(db, "print::p1") is Status.FAILED

    # A wrong token does not sign in; the right one does, and enables the actions.
    browser.get(dashboard + "/login?next=/instances/print%3A%3Ap1")
    browser.find_element(By.ID, "token").send_keys("guess")
    browser.find_element(By.ID, "login").click()
    wait.until(until.presence_of_element_located((By.ID, "login-failed")))
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login").click()
    wait.until(until.presence_of_element_located((By.ID, "graph")))
    assert browser.find_element(By.ID, "retry").is_enabled()

    # Start a runner, retry (the printer then prints): the page follows it to the end.
    with worker_process(f"sqlite:///{db}", "cli_fixtures.runner:app", PROJECT):
        browser.find_element(By.ID, "retry").click()
        assert (
            "Retry recorded" in wait.until(until.presence_of_element_located((By.ID, "done"))).text
        )
        wait.until(lambda d: d.find_element(By.ID, "status").text == "completed")
        wait.until(lambda d: d.find_element(By.ID, "history").is_displayed())
        history = browser.find_element(By.ID, "history").text
        assert "retried" in history
        assert "printed" in history
        marks = {
            node.get_attribute("data-step"): node.get_attribute("data-mark")
            for node in browser.find_elements(By.CSS_SELECTOR, "#graph g.node")
        }
        assert marks == {"print_pages": "completed", "done": "completed"}
        shoot(browser, "ui-instance-completed.png")

        browser.get(dashboard + "/runners")
        wait.until(lambda d: d.find_element(By.ID, "live-count").text == "1")
        shoot(browser, "ui-runners.png")
    assert stored_status(db, "print::p1") is Status.COMPLETED


def test_a_dashboard_started_without_a_token_is_read_only(browser: Any, database: Path) -> None:
    from selenium.webdriver.common.by import By

    db = database
    process, base = serve(db)
    try:
        browser.get(base + "/instances/job%3A%3Aone")
        notice = browser.find_element(By.ID, "actions-read-only").text
        assert "started without a token" in notice
        assert "read-only" in browser.find_element(By.ID, "read-only").text
        assert post(base + "/instances/job::one/retry", {"X-Hephaestus-Token": ""}) == 403
        assert post(base + "/instances/job::one/cancel") == 403
        assert stored_status(db, "job::one") is Status.FAILED
    finally:
        process.terminate()
        process.wait(timeout=20)
