"""`rlhf serve` for real, in a subprocess: it announces itself to the CLI, and it lets only
logged-in clients in. The annotation API is tested in test_api.py, the page in
test_browser.py; the served workbench fixture is in conftest.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client

from rlhf.auth import create_user
from storage import comparisons
from storage.comparisons import NewCompletion

RLHF = Path(sys.executable).with_name("rlhf")
HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> **bold**"


def fill(wb) -> None:
    create_user(wb.store, "ana", "annotator", "ana-secret-pw")
    create_user(wb.store, "rita", "researcher", "rita-secret-pw")
    with wb.store.transaction() as cur:
        prompt_id = cur.execute("SELECT min(id) FROM prompts").fetchall()[0][0]
        comparisons.add(cur, prompt_id, [NewCompletion(HOSTILE, "base"), NewCompletion("plain `<b>` text", "base")])


@pytest.fixture(scope="module")
def served(serve_workbench):
    return serve_workbench(fill)


def test_server_announces_itself_and_cli_points_there(served):
    url = served.url
    info = json.loads(served.home.server_file.read_text())
    assert info["url"] == url and info["pid"] == served.process.pid
    result = subprocess.run([str(RLHF), "models", "--home", str(served.home.root)], capture_output=True, text=True)
    assert result.returncode == 1
    assert url in result.stderr and "Traceback" not in result.stderr


def test_api_client_logs_in_and_reads_a_comparison(served):
    with pytest.raises(ValueError, match="credentials were not provided"):
        Client(served.url, verbose=False)
    annotator = Client(served.url, auth=("ana", "ana-secret-pw"), verbose=False)
    with pytest.raises(Exception, match="Only researchers or admins"):  # no reading ahead in the queue
        annotator.predict(1, api_name="/show_comparison")
    client = Client(served.url, auth=("rita", "rita-secret-pw"), verbose=False)
    text = client.predict(1, api_name="/show_comparison")
    assert "&lt;script&gt;" in text and "<script>" not in text and "<img" not in text
    # rendered on the server: Markdown's formatting, each completion its own text, code keeps its characters
    assert "<strong>bold</strong>" in text and "<h3>B</h3>" in text and "<code>&lt;b&gt;</code>" in text
