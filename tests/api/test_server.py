"""`rlhf serve` for real, in a subprocess: it announces itself to the CLI, and it lets only
logged-in clients in. The annotation API is tested in test_api.py, the page in
test_browser.py; the served workbench fixture is in conftest.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rlhf.auth import create_user
from storage import comparisons
from storage.comparisons import NewCompletion

from helpers import connect

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
        connect(served.url)
    annotator = connect(served.url, ("ana", "ana-secret-pw"))
    with pytest.raises(Exception, match="Only researchers or admins"):  # no reading ahead in the queue
        annotator.predict(1, api_name="/show_comparison")
    client = connect(served.url, ("rita", "rita-secret-pw"))
    text = client.predict(1, api_name="/show_comparison")
    assert "&lt;script&gt;" in text and "<script>" not in text and "<img" not in text
    # rendered on the server: Markdown's formatting, each completion its own text, code keeps its characters
    assert "<strong>bold</strong>" in text and "<h3>B</h3>" in text and "<code>&lt;b&gt;</code>" in text


def fill_with_a_job(wb) -> None:
    """`fill`, a ranking, and a queued job that the server's runner starts at once."""
    from rlhf.jobs.service import JobRequest, Jobs

    fill(wb)
    wb.rank(wb.store.cursor().execute("SELECT min(id) FROM comparisons").fetchall()[0][0], "A > B", "ana")
    Jobs(wb.home, wb.store).submit(JobRequest("sft", settings={"max_steps": 2}))


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_sigterm_stops_the_server_within_10_s_with_clients_connected_and_a_job_running(
        serve_workbench, tmp_path, monkeypatch):
    # the job's process ignores SIGTERM, as a worker stuck in a long step does
    child_pid = tmp_path / "child.pid"
    (tmp_path / "launcher.sh").write_text(f"trap '' TERM\nsleep 120 &\necho $! > {child_pid}\nwait\n")
    monkeypatch.setenv("RLHF_LAUNCHER", f"sh {tmp_path / 'launcher.sh'}")
    served = serve_workbench(fill_with_a_job)
    url = served.url
    deadline = time.monotonic() + 30
    while not child_pid.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert child_pid.exists(), served.log()

    api_client = connect(url, ("rita", "rita-secret-pw"))
    assert api_client.predict(api_name="/list_jobs")  # a signed-in API client
    browser_like = httpx.Client(base_url=url, timeout=30)  # a signed-in page's open heartbeat stream
    assert browser_like.post("/login", data={"username": "ana", "password": "ana-secret-pw"}).status_code == 200
    with browser_like.stream("GET", "/gradio_api/heartbeat/test-session") as stream:
        assert next(stream.iter_lines()).startswith("data:")
        asked = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(timeout=60)
        took = time.monotonic() - asked
    print(f"rlhf serve stopped {took:.1f} s after SIGTERM")
    assert took < 10, served.log()
    assert not alive(int(child_pid.read_text()))  # the job's whole process group went with it
    [(status, error)] = served.rows("SELECT status, error FROM jobs")
    assert status == "cancelled" and error.startswith("Stopped with the server"), error
    assert not served.home.server_file.exists()


def test_the_sampling_child_is_ended_within_its_timeout_while_a_request_waits_for_it():
    """An evaluation can keep the child busy for minutes; stopping the server must not wait
    for it (the request in flight fails instead)."""
    import multiprocessing
    import select
    import threading

    from rlhf.collect.sampler_process import SamplerProcess

    sampler = SamplerProcess()
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    # a child that holds its end of the pipe and never answers: a request it is busy with
    busy = context.Process(target=select.select, args=([], [], [child_end], 120), daemon=True)
    busy.start()
    child_end.close()
    sampler._process, sampler._connection = busy, parent_end
    outcome: list = []

    def ask() -> None:
        try:
            sampler.score("reward-dir", [[{"role": "user", "content": "hi"}]], ["hello"])
        except RuntimeError as error:
            outcome.append(str(error))

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(0.5)
    started = time.monotonic()
    sampler.close(timeout=1)
    assert time.monotonic() - started < 5 and not busy.is_alive()
    asking.join(5)
    assert outcome and "ended unexpectedly" in outcome[0]
