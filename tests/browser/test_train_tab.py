"""The Train tab and the job API, for real: `rlhf serve` on a home whose base model is the
tiny random Llama, with a few ranked comparisons. Through `gradio_client`, a researcher
previews a DPO job, launches it, watches it to the end and finds the new version; an
annotator is refused on every job endpoint; bad requests are refused in one sentence and
make no job. In Chromium, a researcher does the same on the page (a screenshot is left on
failure, as in test_browser.py)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app.tabs.train import progress_html
from app import job_views
from rlhf.auth import create_user
from rlhf.preference.ranking import parse_ranking
from rlhf.train.methods import SettingsError
from storage import comparisons
from storage import jobs as job_rows
from storage.comparisons import NewCompletion
from helpers import password, client, log_in

USERS = {"rita": "researcher", "ana": "annotator"}
HOSTILE = '<script>window.__pwned=1</script> then <img src=x onerror="window.__pwned=2"> and **bold**'

RANKINGS = [  # (annotator, ranking) per comparison of K=3
    [("ana", "A > B > C"), ("rita", "A > B = C")],
    [("ana", "C > A = B")],
    [("ana", "B > A > C"), ("rita", "C > A > B")],
    [("rita", "A = B = C")],  # a full tie: no pair
    [("ana", "A > C > B")],
]
TINY = {"max_steps": 2, "per_device_train_batch_size": 2, "eval_fraction": 0.0}  # seconds, not minutes
KILN_MANUAL = Path(__file__).parents[1] / "data" / "kiln-manual.txt"
JOB_SECONDS = 240  # a tiny DPO job takes ~20 s; generous for a busy machine
ENDPOINTS = {  # every job endpoint with arguments that would work for a researcher
    "/preview_job": ("dpo",), "/submit_job": ("dpo",), "/job_status": (1,), "/cancel_job": (1,),
    "/list_jobs": (), "/list_models": (), "/promote_model": ("base",),
}


def best_vs_worst_pairs() -> int:
    """DPO's default pairs: each top-group completion against each bottom-group one."""
    rankings = [parse_ranking(text, 3) for rankers in RANKINGS for _, text in rankers]
    return sum(len(r.top) * len(r.bottom) for r in rankings if not r.is_full_tie)


def fill(wb) -> None:
    for name, role in USERS.items():
        create_user(wb.store, name, role, password(name))
    with wb.store.transaction() as cur:
        prompt_ids = [r[0] for r in cur.execute("SELECT id FROM prompts ORDER BY id LIMIT ?",
                                                [len(RANKINGS)]).fetchall()]
        ids = [comparisons.add(cur, pid, [NewCompletion(f"Answer {c} to prompt {pid}.", "base") for c in "ABC"])
               for pid in prompt_ids]
    for comparison_id, rankers in zip(ids, RANKINGS):
        for user, text in rankers:
            wb.rank(comparison_id, text, user)
    # job 1 failed long ago, and its error and log are hostile HTML: shown as text, never run
    with wb.store.transaction() as cur:
        job_id = job_rows.create(cur, "dpo", {"method": "dpo", "base": "base", "rows": 6}, "rita")
        job_rows.finish(cur, job_id, "failed", f"Exploded: {HOSTILE}")
    (wb.home.jobs_dir / str(job_id)).mkdir(parents=True)
    (wb.home.jobs_dir / str(job_id) / "log.txt").write_text(f"starting\nmodel said {HOSTILE}\n")


@pytest.fixture(scope="module")
def served(serve_workbench):
    return serve_workbench(fill, with_model=True)


def refusal(call) -> str:
    with pytest.raises(AppError) as refused:
        call()
    return str(refused.value)


def one_sentence(text: str) -> bool:
    return "\n" not in text and "Traceback" not in text and text.endswith(".")


def wait_for_end(rita: Client, job_id: int, seen: list[dict]) -> dict:
    deadline = time.monotonic() + JOB_SECONDS
    while time.monotonic() < deadline:
        status = rita.predict(job_id, 5, api_name="/job_status")
        seen.append(status)
        if status["status"] in ("succeeded", "failed", "cancelled"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end within {JOB_SECONDS} s: {seen[-1]}")


def test_a_researcher_previews_trains_and_finds_the_new_version(served):
    rita = client(served, "rita")
    endpoints = rita.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ENDPOINTS:
        parameters = {p["parameter_name"] for p in endpoints[name]["parameters"]}
        assert not parameters & {"user", "username", "created_by", "request"}, name  # the login says who
    preview = rita.predict("dpo", api_name="/preview_job")
    assert preview["rows"] == best_vs_worst_pairs() and preview["data"] == "pairs" and preview["base"] == "base"
    assert f"gives {best_vs_worst_pairs()} preference pairs" in preview["message"]
    only_ana = rita.predict("dpo", selection={"annotators": ["ana"]}, settings={"pairs": "all"},
                            api_name="/preview_job")
    assert only_ana["rows"] == sum(len(parse_ranking(t, 3).pairs()) for r in RANKINGS for u, t in r if u == "ana")

    submitted = rita.predict("dpo", settings=TINY, api_name="/submit_job")
    job_id = submitted["job_id"]
    assert submitted["status"] in ("queued", "running") and submitted["created_by"] == "rita"
    assert submitted["rows"] == best_vs_worst_pairs() and submitted["settings"]["max_steps"] == 2
    # a second job waits in the queue behind the first; cancelling it there is immediate
    queued = rita.predict("dpo", settings=TINY, api_name="/submit_job")["job_id"]
    assert "was queued and is cancelled" in rita.predict(queued, api_name="/cancel_job")["message"]
    assert rita.predict(queued, api_name="/job_status")["status"] == "cancelled"

    seen: list[dict] = []
    status = wait_for_end(rita, job_id, seen)
    assert status["status"] == "succeeded", status["error"] or status["log_tail"]
    assert status["step"] == status["total"] == 2 and status["progress"] == 1.0
    assert status["output_version"] == f"dpo-{job_id}" and "loss" in status["metrics"]
    assert status["log_tail"] and len(status["log_tail"].splitlines()) <= 5

    jobs = rita.predict(api_name="/list_jobs")
    assert [(j["id"], j["status"]) for j in jobs[:2]] == [(queued, "cancelled"), (job_id, "succeeded")]
    assert jobs[1]["created_by"] == "rita" and jobs[1]["output_version"] == f"dpo-{job_id}"
    versions = {v["name"]: v for v in rita.predict(api_name="/list_models")}
    made = versions[f"dpo-{job_id}"]
    assert (made["kind"], made["parent"], made["method"], made["job_id"], made["status"]) == (
        "policy", "base", "dpo", job_id, "candidate")
    assert "already ended (succeeded)" in refusal(lambda: rita.predict(job_id, api_name="/cancel_job"))
    assert rita.predict(f"dpo-{job_id}", api_name="/promote_model")["status"] == "active"
    versions = {v["name"]: v for v in rita.predict(api_name="/list_models")}
    assert versions[f"dpo-{job_id}"]["status"] == "active" and versions["base"]["status"] == "archived"
    rita.predict("base", api_name="/promote_model")  # the browser test trains from base again


def test_the_api_takes_a_pretraining_corpus_as_an_uploaded_file(served, tmp_path):
    rita = client(served, "rita")
    jobs_before = len(rita.predict(api_name="/list_jobs"))
    preview = rita.predict("pretrain", corpus=handle_file(str(KILN_MANUAL)), api_name="/preview_job")
    assert preview["rows"] == 1 and preview["data"] == "corpus"
    assert preview["message"].startswith("The corpus kiln-manual.txt gives 1 document of")
    assert preview["corpus"]["characters"] == len(KILN_MANUAL.read_text(encoding="utf-8"))
    missing = refusal(lambda: rita.predict("pretrain", api_name="/preview_job"))
    assert "pretrain trains on a corpus file and none was given" in missing and "handle_file" in missing
    broken = tmp_path / "notes.jsonl"
    broken.write_text('{"title": "no text here"}\n', encoding="utf-8")
    said = refusal(lambda: rita.predict("pretrain", corpus=handle_file(str(broken)), api_name="/submit_job"))
    assert "line 1: has no text field" in said and one_sentence(said), said
    assert "leave the corpus out" in refusal(
        lambda: rita.predict("dpo", corpus=handle_file(str(KILN_MANUAL)), api_name="/preview_job"))
    assert len(rita.predict(api_name="/list_jobs")) == jobs_before


def test_an_annotator_is_refused_on_every_job_endpoint(served):
    ana = client(served, "ana")
    jobs_before = len(client(served, "rita").predict(api_name="/list_jobs"))
    for endpoint, args in ENDPOINTS.items():
        message = refusal(lambda: ana.predict(*args, api_name=endpoint))
        assert "Only researchers or admins may do this, and ana is an annotator." in message, endpoint
    assert len(client(served, "rita").predict(api_name="/list_jobs")) == jobs_before


@pytest.mark.parametrize("method, settings, words", [
    ("dpo", {"learning_rate": -1}, "learning_rate must be greater than 0"),
    ("dpo", {"no_such_setting": 3}, "dpo has no setting 'no_such_setting'"),
    ("dpo", {"pairs": "some"}, "pairs must be one of best_vs_worst, all"),
    ("ppo", {}, "needs a reward model and there is none yet"),
    ("nope", {}, "Unknown method 'nope'"),
])
def test_a_bad_request_is_refused_in_one_sentence_and_makes_no_job(served, method, settings, words):
    rita = client(served, "rita")
    jobs_before = len(rita.predict(api_name="/list_jobs"))
    for endpoint in ("/preview_job", "/submit_job"):
        message = refusal(lambda: rita.predict(method, settings=settings, api_name=endpoint))
        assert words in message and one_sentence(message), message
    assert len(rita.predict(api_name="/list_jobs")) == jobs_before


# -- what the tab makes of a job's files (no server) -----------------------------------------

class FilesOnlyJobs:
    """The part of `rlhf.jobs.service.Jobs` that job_views reads, over one job directory."""

    def __init__(self, job_dir: Path, row: dict, metrics: pd.DataFrame):
        self.dir, self.row, self.frame = job_dir, row, metrics

    def get(self, job_id):
        return self.row

    def job_dir(self, job_id):
        return self.dir

    def metrics(self, job_id):
        return self.frame

    def log_text(self, job_id, tail=None):
        return "\n".join(["line"] * 50 if tail is None else ["line"] * min(tail, 50))


def test_progress_eta_and_plots_come_from_the_jobs_files(tmp_path):
    metrics = pd.DataFrame({"step": [1, 1, 1, 1, 2, 2, 2, 2, 2],
                            "name": ["loss", "rewards/accuracies", "rewards/margins", "learning_rate"] * 2 + ["eval_loss"],
                            "value": [0.7, 0.5, 0.1, 1e-5, 0.6, 1.0, 0.3, 5e-6, 0.65]})
    row = {"id": 7, "kind": "dpo", "status": "running", "step": 3, "total_steps": 10, "output_version": None,
           "error": None, "created_by": "rita", "created_at": pd.Timestamp("2026-11-23 10:00"),
           "started_at": pd.NaT, "finished_at": None, "spec": {"method": "dpo", "base": "base", "rows": 12}}
    jobs = FilesOnlyJobs(tmp_path, row, metrics)
    (tmp_path / "status.json").write_text(json.dumps({"state": "running", "step": 4, "total": 10, "eta_seconds": 75.4}))
    status = job_views.job_status(jobs, 7, log_lines=3)
    assert (status["step"], status["total"], status["progress"], status["eta"]) == (4, 10, 0.4, "1 min 15 s")
    assert status["metrics"] == {"loss": 0.6, "rewards/accuracies": 1.0, "rewards/margins": 0.3,
                                 "learning_rate": 5e-6, "eval_loss": 0.65}
    assert status["created_at"] == "2026-11-23T10:00:00" and status["started_at"] is None
    assert status["log_tail"] == "line\nline\nline"
    json.dumps(status)  # all of it travels as JSON
    assert job_views.status_sentence(status) == "Job 7: dpo from base on 12 rows · running · step 4/10 · ETA 1 min 15 s"
    assert 'value="4"' in progress_html(status) and "ETA 1 min 15 s" in progress_html(status)

    (tmp_path / "status.json").write_text(json.dumps({"state": "succeeded", "step": 10, "total": 10}))
    assert job_views.job_status(jobs, 7)["phase"] == "finishing"  # the server is registering the version
    jobs.row = {**row, "status": "succeeded", "step": 10, "output_version": "dpo-7"}
    done = job_views.job_status(jobs, 7)
    assert done["progress"] == 1.0 and done["eta"] is None and "made dpo-7" in job_views.status_sentence(done)

    losses, others = job_views.plot_frames(metrics)
    assert set(losses["name"]) == {"loss", "eval_loss"}
    assert set(others["name"]) == {"rewards/accuracies", "rewards/margins"}  # the key figures, not the bookkeeping
    assert set(job_views.plot_frames(metrics, ["learning_rate"])[1]["name"]) == {"learning_rate"}
    assert all(frame.empty for frame in job_views.plot_frames(metrics.iloc[0:0]))


def test_only_changed_settings_are_sent_and_more_settings_are_key_value_lines():
    shown = {"learning_rate": None, "num_train_epochs": None, "per_device_train_batch_size": 2.0, "beta": 0.1,
             "adapter": "lora", "pairs": "all", "loss": "davidson", "lora_target": ""}
    assert job_views.changed_settings("dpo", shown) == {"per_device_train_batch_size": 2, "pairs": "all"}
    # what the data decides is sent whenever it is typed in, even as the value the rule gives a mid-sized set
    typed = {**shown, "num_train_epochs": 1.0, "learning_rate": 2e-04}
    assert job_views.changed_settings("dpo", typed) == {
        "num_train_epochs": 1, "learning_rate": 2e-04, "per_device_train_batch_size": 2, "pairs": "all"}
    as_typed = {**shown, "num_train_epochs": "3", "learning_rate": "1e-4"}   # those fields are text boxes
    assert job_views.changed_settings("dpo", as_typed)["num_train_epochs"] == 3
    assert job_views.changed_settings("dpo", as_typed)["learning_rate"] == 1e-4
    assert {s.key for s in job_views.method_settings("grpo") if s.from_data} == {"learning_rate", "max_steps"}
    assert not any(s.from_data for s in job_views.method_settings("reward_head"))  # a fixed full-batch fit
    assert job_views.parse_more_settings("max_steps=2\n# a comment\n\nweight_decay = 1e-2") == {
        "max_steps": 2, "weight_decay": 0.01}
    with pytest.raises(SettingsError, match="is not a setting"):
        job_views.parse_more_settings("max_steps 2")
    assert [s.key for s in job_views.method_settings("grpo")][:2] == ["learning_rate", "max_steps"]


# -- in the browser ------------------------------------------------------------------------

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def choose(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


@pytest.mark.browser
def test_a_researcher_launches_and_watches_a_job_on_the_page(served, page):
    log_in(page, served.url, "rita", "researcher")
    page.get_by_role("tab", name="Train").click()

    # the method's defaults are shown, with their help; what the data decides is blank and says so
    expect(page.locator("#train-method-help")).to_contain_text("direct preference optimisation")
    expect(page.get_by_label("learning_rate")).to_have_value("")
    expect(page.locator("#setting-num_train_epochs")).to_contain_text("blank: set from the data")
    expect(page.get_by_label("beta")).to_have_value("0.1")
    expect(page.get_by_label("per_device_train_batch_size")).to_have_value("4")
    expect(page.locator("#setting-pairs")).to_contain_text("which pairs of a ranking")
    expect(page.locator("#train-base input")).to_have_value("base")
    expect(page.locator("#train-reward")).to_be_hidden()  # dpo needs no reward model

    # another method shows its own settings and defaults, and the reward model it needs
    choose(page, "#train-method", "grpo")
    expect(page.locator("#train-reward")).to_be_visible()
    expect(page.get_by_label("num_generations")).to_have_value("4")
    expect(page.get_by_label("max_steps")).to_have_value("")
    expect(page.locator("#setting-pairs")).to_be_hidden()
    # pretrain takes a corpus upload in place of the data selection, read and checked on the server
    choose(page, "#train-method", "pretrain")
    expect(page.locator("#train-corpus")).to_be_visible()
    expect(page.locator("#train-selection")).to_be_hidden()
    page.locator("#train-corpus input[type=file]").set_input_files(str(KILN_MANUAL))
    # Gradio shows the stem and the extension in separate spans, so the text reads "kiln-manual .txt"
    expect(page.locator("#train-corpus").get_by_role("cell", name="kiln-manual.txt")).to_be_visible()
    page.get_by_role("button", name="Preview data").click()
    expect(page.locator("#train-status")).to_contain_text("The corpus kiln-manual.txt gives 1 document of")
    choose(page, "#train-method", "dpo")
    expect(page.locator("#train-corpus")).to_be_hidden()
    expect(page.locator("#train-selection")).to_be_visible()
    expect(page.locator("#train-reward")).to_be_hidden()
    expect(page.get_by_label("learning_rate")).to_have_value("")
    expect(page.locator("#setting-num_generations")).to_be_hidden()

    page.get_by_role("button", name="Preview data").click()
    expect(page.locator("#train-status")).to_contain_text(f"gives {best_vs_worst_pairs()} preference pairs")
    page.get_by_label("per_device_train_batch_size").fill("2")
    page.locator("#train-more textarea").fill("max_steps=2\neval_fraction=0")
    page.get_by_role("button", name="Launch").click()
    expect(page.locator("#train-status")).to_contain_text("Queued job")
    job_id = int(re.search(r"Queued job (\d+)", page.locator("#train-status").inner_text()).group(1))

    line = page.locator("#train-job-line")
    expect(line).to_contain_text(f"Job {job_id}: dpo from base")
    expect(line).to_contain_text("succeeded", timeout=JOB_SECONDS * 1000)
    expect(line).to_contain_text(f"made dpo-{job_id}")
    expect(page.locator("#train-progress-bar")).to_contain_text("2/2 steps · 100%")
    expect(page.locator("#train-progress-bar progress")).to_have_attribute("value", "2")
    expect(page.locator("#train-log textarea")).to_have_value(re.compile("Succeeded"))
    expect(page.locator("#train-jobs")).to_contain_text("rita")
    expect(page.locator("#train-models")).to_contain_text(f"dpo-{job_id}")

    # the old failed job's error and log are shown as the characters written, and nothing runs
    expect(page.locator("#train-jobs")).to_contain_text(f"Exploded: {HOSTILE}")
    choose(page, "#train-job", "#1 dpo (failed)")
    expect(page.locator("#train-job-line")).to_contain_text("Job 1: dpo from base on 6 rows · failed · Exploded: <script>")
    expect(page.locator("#train-log textarea")).to_have_value(f"starting\nmodel said {HOSTILE}")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img[src='x']").count() == 0

    # a reloaded page watches the newest job again
    page.reload()
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#train-job-line")).to_contain_text(f"Job {job_id}: dpo from base")
