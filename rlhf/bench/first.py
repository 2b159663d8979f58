"""First-comparison benchmark: seconds from `rlhf serve` answering, on a home fresh from
`rlhf init`, until an annotator is handed a comparison."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from rlhf.bench.serving import fresh_home, served
from rlhf.home import Home


def bench_first(model_dir: Path, repeats: int) -> dict:
    """Seconds from `rlhf serve` answering, on a home fresh from `rlhf init` (its base model
    linked from `model_dir`), until an annotator's `/next_comparison` hands out a comparison,
    the median over `repeats` fresh homes; `rlhf init`'s time and the server's own start-up
    (until it answers) beside."""
    import subprocess

    from rlhf.auth import create_user
    from rlhf.collect.workbench import Workbench

    waits, startups, inits = [], [], []
    for _ in range(repeats):
        root = fresh_home(model_dir, "first")
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "app.cli", "init", "--home", str(root)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, check=True)
        inits.append(time.monotonic() - start)
        with Workbench(Home(root)) as wb:
            create_user(wb.store, "bench", "annotator", "bench-password")
        with served(root) as (_, startup, client):
            answered = time.monotonic()
            deadline = answered + 600
            while client.predict(api_name="/next_comparison")["handout"] is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("no comparison within 600 s of the server answering")
                time.sleep(0.25)
            waits.append(time.monotonic() - answered)
            startups.append(startup)
    return {"repeats": repeats, "first_comparison_after_answer_s": round(statistics.median(waits), 1),
            "each_s": [round(w, 1) for w in waits], "server_start_until_answer_s": round(statistics.median(startups), 1),
            "rlhf_init_s": round(statistics.median(inits), 1)}
