"""One user cannot stall or exhaust the server (issue 11, part 2): capped inputs, refused
bodies, finite concurrency, research sampling off the request path, bounded model caches
and export files that go away. The server tests run against a real `rlhf serve`."""

from __future__ import annotations

import gc
import http.client
import os
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from gradio_client.exceptions import AppError

from rlhf.collect import exports
from rlhf.auth import create_user
from rlhf.limits import LIMITS
from rlhf.modeling.model_cache import ModelCache
from storage import comparisons, prompts
from storage.comparisons import NewCompletion
from helpers import app_context, client, password

MIB = 1024 * 1024


# -- the bounded model cache ------------------------------------------------------------------


class Loaded:
    """Stands in for a model: something that can be freed."""

    def __init__(self, path):
        self.path = path


def test_the_model_cache_keeps_the_most_recently_used_and_frees_the_rest():
    loads = []

    def load(path):
        loads.append(path)
        return Loaded(path)

    cache = ModelCache(capacity=2)
    first = weakref.ref(cache.get("policy", "a", load))
    cache.get("policy", "b", load)
    cache.get("policy", "a", load)  # a used again: b is now the least recently used
    cache.get("scorer", "c", load)
    assert [str(path) for _, path in cache.loaded()] == ["a", "c"]
    assert [str(path) for path in loads] == ["a", "b", "c"]  # a was not loaded twice
    cache.get("policy", "b", load)  # loaded again, and a (now the oldest) freed
    assert [str(path) for path in loads] == ["a", "b", "c", "b"]
    gc.collect()
    assert first() is None, "an evicted model nobody holds is freed"
    with pytest.raises(ValueError):
        ModelCache(capacity=0)


def test_the_workbench_and_the_evaluations_share_one_bounded_cache(workbench):
    from rlhf.compare import evaluate

    assert evaluate.ModelCache is ModelCache
    assert isinstance(workbench._policies, ModelCache) and workbench._policies.capacity == LIMITS.loaded_models
    assert LIMITS.loaded_models == 2


# -- export files -------------------------------------------------------------------------------


def test_exports_are_deleted_after_their_hour(tiny_home):
    old = exports.new_path(tiny_home, "preference.jsonl")
    old.write_text("{}\n")
    an_hour_ago = time.time() - LIMITS.export_ttl_s - 5
    os.utime(old.parent, (an_hour_ago, an_hour_ago))
    fresh = exports.new_path(tiny_home, "preference.jsonl")  # a new export sweeps the stale ones first
    fresh.write_text("{}\n")
    assert not old.parent.exists() and fresh.exists() and fresh.parent != old.parent
    assert exports.sweep(tiny_home) == 0 and fresh.exists()
    assert exports.sweep(tiny_home, now=time.time() + LIMITS.export_ttl_s + 5) == 1 and not fresh.parent.exists()
    sweeper = exports.Sweeper(tiny_home, every_s=0.05, max_age_s=0)
    late = exports.new_path(tiny_home, "arena-battles.csv")
    sweeper.start()
    try:
        deadline = time.monotonic() + 10
        while late.parent.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sweeper.stop()
    assert not late.parent.exists(), "the background sweeper deletes old exports on its own"


def test_the_tabs_write_their_exports_where_they_are_swept(workbench):
    from types import SimpleNamespace

    from app.tabs import compare, data
    from rlhf.auth import create_user

    create_user(workbench.store, "rhea", "researcher", "rhea-secret-pw")
    ctx, researcher = app_context(workbench), SimpleNamespace(username="rhea")
    made = [data.export(ctx, "rankings", "all", ".jsonl", researcher)[0],
            compare.export_votes(ctx, "csv", researcher)[0]]
    for path in map(Path, made):
        assert path.is_file() and path.parent.parent == workbench.home.exports_dir
    assert exports.sweep(workbench.home, now=time.time() + LIMITS.export_ttl_s + 5) == 2


# -- the app as built: every event limited, every text input capped ------------------------------


def test_every_event_has_a_finite_concurrency_limit_and_every_text_input_a_cap(workbench):
    import gradio as gr

    from app.server import build_app

    app = build_app(app_context(workbench))
    default = app._queue.default_concurrency_limit
    assert isinstance(default, int) and default == LIMITS.request_concurrency
    research, unlimited, uncapped = set(), [], set()
    for block_fn in app.fns.values():
        if block_fn.fn is None:
            continue  # runs in the browser only
        name = block_fn.api_name or block_fn.name
        limit = default if block_fn.concurrency_limit == "default" else block_fn.concurrency_limit
        if not block_fn.queue or not isinstance(limit, int):
            unlimited.append(name)
        if block_fn.concurrency_id == "research-sampling":
            research.add((name, limit))
        uncapped |= {getattr(c, "label", None) or c.elem_id for c in block_fn.inputs
                     if isinstance(c, gr.Textbox) and c.max_length is None}
    assert unlimited == [], f"events without a finite concurrency limit: {unlimited}"
    assert uncapped == set(), f"text inputs without a length cap: {uncapped}"
    api = {name for name, _ in research if name and not name.startswith(("on_", "<lambda>"))}
    assert {"compare_versions", "arena_battle", "evaluate_versions"} <= api
    assert {limit for _, limit in research} == {LIMITS.research_concurrency}
    assert len(research) == 6  # the three endpoints and the Compare tab's three buttons


# -- a real server ----------------------------------------------------------------------------------

def fill(wb) -> None:
    create_user(wb.store, "ana", "annotator", password("ana"))
    create_user(wb.store, "ben", "annotator", password("ben"))
    create_user(wb.store, "rita", "researcher", password("rita"))
    with wb.store.transaction() as cur:
        prompts.add_prompts(cur, "caps", [[{"role": "user", "content": "caps prompt"}]], source="test")
        (prompt_id,) = cur.execute("SELECT id FROM prompts WHERE prompt_set = 'caps'").fetchone()
        comparisons.add(cur, prompt_id, [NewCompletion(f"caps answer {letter}", "base") for letter in "ABCD"])
        prompts.add_prompts(cur, "during-eval", [[{"role": "user", "content": f"Say {i}."}] for i in range(8)],
                            source="test")


@pytest.fixture(scope="module")
def served(serve_workbench):
    return serve_workbench(fill, queue={"prompt_sets": ["caps"], "k": 2, "max_new_tokens": 8}, with_model=True)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def post(url: str, path: str, body, headers: dict, timeout: float = 30) -> tuple[int, bytes, float]:
    """POST with http.client (a body that is an iterable of chunks goes chunked); returns
    (status, body, seconds). The server may close the connection before the whole body is
    sent: what it answered is read all the same."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    started = time.monotonic()
    try:
        try:
            connection.request("POST", path, body=body, headers=headers, encode_chunked=not isinstance(body, bytes))
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = connection.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        connection.close()


def test_a_20_mb_ranking_is_refused_at_once_and_the_server_does_not_grow(served):
    url, pid = served.url, served.process.pid
    started = time.monotonic()
    ana = client(served, "ana")
    ana.predict(api_name="/next_comparison")  # warm: the first requests load what they need
    print(f"warm in {time.monotonic() - started:.1f} s")
    before = rss_mib(pid)
    payload = ('{"data": [1, "' + "A" * (20 * MIB) + '"], "fn_index": 0, "session_hash": "x"}').encode()
    status, body, seconds = post(url, "/gradio_api/queue/join", payload, {"Content-Type": "application/json"})
    assert status == 413 and b"at most 2 MiB" in body
    assert seconds < 5, f"refused in {seconds:.1f} s"
    started = time.monotonic()
    with pytest.raises(Exception):  # the call, through a logged-in client, is refused too
        ana.predict(1, "A" * (20 * MIB), api_name="/submit_ranking")
    print(f"client refused in {time.monotonic() - started:.1f} s")
    grown = rss_mib(pid) - before
    print(f"20 MB ranking: 413 in {seconds * 1000:.0f} ms; server RSS {before:.0f} MiB, grew {grown:.0f} MiB")
    assert grown < 100, f"the server grew by {grown:.0f} MiB"


def test_a_chunked_body_is_counted_and_refused_past_the_cap(served):
    chunks = (b"x" * 65536 for _ in range(LIMITS.body_bytes // 65536 + 2))
    join, json_type = "/gradio_api/queue/join", {"Content-Type": "application/json"}
    status, body, _ = post(served.url, join, chunks, json_type)
    assert status == 413 and b"at most 2 MiB" in body
    status, _, _ = post(served.url, join, iter([b'{"data": [], ', b'"fn_index": 0}']), json_type)
    assert status != 413 and status < 500, "a small chunked body goes on to the app"
    declared = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(LIMITS.upload_bytes + 1)}
    status, body, seconds = post(served.url, "/gradio_api/upload", b"", declared)
    assert status == 413 and b"An upload may be at most 100 MiB" in body and seconds < 5
    assert client(served, "ana").config["max_file_size"] == LIMITS.upload_bytes  # Gradio's own check, per file


def test_overlong_rankings_answers_and_names_are_refused_and_nothing_is_stored(served):
    ana, rita = client(served, "ana"), client(served, "rita")
    item = ana.predict(api_name="/next_comparison")
    handout = item["handout"]
    assert handout is not None
    refusals = {
        "ranking": lambda: ana.predict(handout, "A > B > C > D" + " " * 100, api_name="/submit_ranking"),
        "better answer": lambda: ana.predict(handout, "A > B > C > D", None, None, None, False,
                                             "x" * (LIMITS.text_chars + 1), api_name="/submit_ranking"),
        "comment": lambda: ana.predict(handout, "A > B > C > D", None, None, None, False, None,
                                       "x" * (LIMITS.text_chars + 1), api_name="/submit_ranking"),
        "reason": lambda: ana.predict(handout, "x" * (LIMITS.text_chars + 1), api_name="/skip_comparison"),
        "model version": lambda: rita.predict(None, None, "v" * 1000, api_name="/queue_settings"),
        "prompt": lambda: rita.predict("base", "base", "p" * (LIMITS.prompt_chars + 1), api_name="/compare_versions"),
        "settings": lambda: rita.predict("sft", None, None, {"learning_rate": "1" * (LIMITS.settings_chars + 1)},
                                         api_name="/preview_job"),
    }
    for what, call in refusals.items():
        with pytest.raises(AppError) as refused:
            call()
        message = str(refused.value)
        assert message.startswith(f"The {what} ") and "at most" in message and "\n" not in message, message
    assert ana.predict(api_name="/progress")["done_total"] == 0
    with served.stopped() as wb:
        cur = wb.store.cursor()
        assert cur.execute("SELECT count(*) FROM rankings").fetchone() == (0,)
        assert cur.execute("SELECT count(*) FROM skips").fetchone() == (0,)


def test_annotators_and_pregeneration_go_on_during_a_long_evaluation(served):
    """A minutes-long evaluation runs in the research sampler: meanwhile the pre-generator
    samples new comparisons in its own process and an annotator is answered at once."""
    rita, ben = client(served, "rita"), client(served, "ben")
    rita.predict(prompt_sets=["during-eval"], ready_target=2, api_name="/queue_settings")
    evaluation = rita.submit("base", "base", "default", 183, None, None, 0, 400, api_name="/evaluate_versions")
    latencies, handed = [], None
    deadline = time.monotonic() + 240
    while handed is None and time.monotonic() < deadline:
        started = time.monotonic()
        handed = ben.predict(api_name="/next_comparison")
        latencies.append(time.monotonic() - started)
        if handed["handout"] is None:
            handed = None
            time.sleep(0.5)
    assert not evaluation.done(), "the evaluation ended first: it was too short to tell"
    assert handed is not None, "no comparison was generated while the evaluation ran"
    assert handed["prompt"].startswith("Say "), "the comparison handed out was made for the evaluation's time"
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    print(f"during an evaluation: {len(latencies)} /next_comparison calls, p50 {latencies[len(latencies) // 2]:.3f} s, "
          f"p95 {p95:.3f} s, max {latencies[-1]:.3f} s")
    assert latencies[-1] < 10, f"an annotator waited {latencies[-1]:.1f} s"
    with ThreadPoolExecutor(4) as pool:  # several at once, too
        assert all(pool.map(lambda _: ben.predict(api_name="/progress") is not None, range(4)))
    assert not evaluation.done()
