"""Annotation benchmark: submit-to-next-comparison latency through a served workbench while
the pre-generator samples in the background.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from rlhf.bench.serving import fresh_home, served
from rlhf.home import Home


def bench_annotate(model_dir: Path, submissions: int, ready_target: int) -> dict:
    """Latency of the annotation loop through a real server: an annotator's client submits a
    ranking and asks for the next comparison, while the server's pre-generator samples
    new comparisons with the default model in the background (the worst case on 2 cores)."""
    from gradio_client import Client

    from rlhf.collect.annotation import Annotation
    from rlhf.auth import User, create_user
    from rlhf.home import BASE_VERSION
    from rlhf.collect.workbench import Workbench
    from rlhf.home import default_prompts
    from storage import comparisons, prompts
    from storage.comparisons import NewCompletion

    root = fresh_home(model_dir, "annotate")
    with Workbench(Home(root)) as wb:
        wb.init()
        create_user(wb.store, "bench", "annotator", "bench-password")
        create_user(wb.store, "bench-lead", "researcher", "bench-password")
        prefilled = submissions + 5
        # the generator keeps sampling all through the run when it wants more than is there
        Annotation(wb).set_config(User("admin", "admin"), ready_target=prefilled + ready_target if ready_target else 0,
                                  max_new_tokens=128)
        texts = [row["prompt"] for row in default_prompts()]
        with wb.store.transaction() as cur:  # a full queue of realistic texts, without waiting for sampling
            prompt_ids = prompts.in_sets(cur, None)["id"].tolist()[::-1]
            for i, prompt_id in enumerate(prompt_ids[:prefilled]):
                comparisons.add(cur, prompt_id, [NewCompletion(texts[(i + j) % len(texts)] * 3, BASE_VERSION)
                                                 for j in range(4)])
    with served(root) as (url, _, client):
        lead = Client(url, auth=("bench-lead", "bench-password"), verbose=False)
        generation = lead.predict(api_name="/queue_settings")["generation"]
        deadline = time.monotonic() + 300
        while ready_target and generation["generated_total"] == 0:  # measure while it really samples
            if generation["last_error"] or time.monotonic() > deadline:
                raise RuntimeError(f"the pre-generator did not produce comparisons: {generation}")
            time.sleep(1)
            generation = lead.predict(api_name="/queue_settings")["generation"]
        item = client.predict(api_name="/next_comparison")
        submit_ms, next_ms = [], []
        for i in range(submissions):
            # as the page does: one request stores the ranking and brings the next comparison
            start = time.perf_counter()
            item = client.predict(item["handout"], "B > A = C > D", fetch_next=True,
                                  api_name="/submit_ranking")["next"]
            submit_ms.append((time.perf_counter() - start) * 1000)
            assert item["handout"] is not None, "the queue ran dry during the benchmark"
            if i % 4 == 0:  # a reload now and then: the page asks for its item again
                start = time.perf_counter()
                item = client.predict(api_name="/next_comparison")
                next_ms.append((time.perf_counter() - start) * 1000)
        generation = lead.predict(api_name="/queue_settings")["generation"]

    def quantiles(values: list[float]) -> dict:
        cuts = statistics.quantiles(values, n=20)
        return {"p50_ms": round(statistics.median(values), 1), "p95_ms": round(cuts[18], 1)}

    return {"submissions": submissions, "pregeneration_target": ready_target,
            "generator_at_end": {key: generation[key] for key in ("state", "generated_total", "ready")},
            "submit_to_next_comparison": quantiles(submit_ms), "next_comparison_alone": quantiles(next_ms)}


def bench_service(annotators: int, rankings: int) -> dict:
    """The annotation service's own cost, without Gradio or a network: `annotators` users
    each ranking as the page does (`Annotation.submit_and_next`: store the ranking, hand out
    the next item with its progress) in turns, in this process, on a home of the load
    benchmark's shape (`rlhf.bench.load.prepare_home`); the median and p95 of each call."""
    import random
    import tempfile

    from rlhf.auth import User
    from rlhf.bench.load import RANKINGS, LoadSettings, prepare_home
    from rlhf.collect.annotation import Annotation, Submission
    from rlhf.collect.workbench import Workbench

    root = Path(tempfile.mkdtemp(prefix="rlhf-bench-service-"))
    home, names = prepare_home(root / "home", LoadSettings(annotators=annotators, rankings=rankings))
    rng = random.Random(0)
    with Workbench(home) as wb:
        service = Annotation(wb)
        users = [User(name, "annotator") for name in names]
        items = {user.name: service.next_item(user) for user in users}
        per_call_ms = []
        for i in range(rankings):
            user = users[i % len(users)]
            start = time.perf_counter()
            _, items[user.name] = service.submit_and_next(user, Submission(items[user.name].handout,
                                                                           rng.choice(RANKINGS)))
            per_call_ms.append((time.perf_counter() - start) * 1000)
    warm = per_call_ms[len(users):]  # each user's first call pays one-time costs
    return {"annotators": annotators, "rankings": rankings,
            "submit_and_next_ms": {"p50": round(statistics.median(warm), 1),
                                   "p95": round(statistics.quantiles(warm, n=20)[18], 1)}}
