"""The served app, for real: `rlhf serve` in a subprocess, a gradio_client, and headless
Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf.workbench import Workbench
from storage import comparisons
from storage.comparisons import NewCompletion

HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> **bold**"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tiny_home, tmp_path):
    """A home holding one comparison whose completion is hostile HTML, served by `rlhf serve`."""
    with Workbench(tiny_home) as wb, wb.store.transaction() as cur:
        prompt_id = cur.execute("SELECT min(id) FROM prompts").fetchall()[0][0]
        comparisons.add(cur, prompt_id, [NewCompletion(HOSTILE, "base"), NewCompletion("plain `<b>` text", "base")])
    port = free_port()
    rlhf = Path(sys.executable).with_name("rlhf")
    log = open(tmp_path / "serve.log", "w")
    process = subprocess.Popen([str(rlhf), "serve", "--home", str(tiny_home.root), "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"rlhf serve exited: {(tmp_path / 'serve.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        raise AssertionError("rlhf serve did not start listening within 90 s")
    yield url, tiny_home
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_server_announces_itself_and_cli_points_there(server):
    url, home = server
    info = json.loads(home.server_file.read_text())
    assert info["url"] == url
    result = subprocess.run([str(Path(sys.executable).with_name("rlhf")), "models", "--home", str(home.root)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert url in result.stderr and "Traceback" not in result.stderr


def test_api_client_reads_a_comparison(server):
    from gradio_client import Client

    url, _ = server
    client = Client(url, verbose=False)
    text = client.predict(1, api_name="/show_comparison")
    assert "&lt;script&gt;" in text and "<script>" not in text
    assert "### B" in text


@pytest.mark.browser
def test_browser_shows_model_html_as_text(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, _ = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page()
        try:
            page.goto(url)
            field = page.get_by_label("Comparison id")
            field.fill("1")
            field.press("Enter")
            page.get_by_text("window.__pwned = 1").wait_for(timeout=30_000)
            assert page.evaluate("window.__pwned === undefined")
            assert page.locator("img[src='x']").count() == 0
            assert page.get_by_text("<script>window.__pwned = 1</script>", exact=False).count() >= 1
        except Exception:
            page.screenshot(path=str(Path(os.environ.get("TEST_ARTIFACTS", tmp_path)) / "browser-failure.png"))
            raise
        finally:
            browser.close()
