"""`python -m rlhf.bench load`: many annotators against a real `rlhf serve`, which is killed
with SIGKILL midway and restarted while they keep working.

Each annotator is a thread with its own `gradio_client` session that ranks as fast as
it can, exactly as the page does (one request stores the ranking and brings the next
comparison). When a request fails it signs in again until the server is back. At the
end the store is opened and checked against what the server acknowledged: nothing lost,
nothing stored twice, no comparison over its overlap, every ranking with its ranks.

Reference in the same run: a trivial Gradio endpoint behind the same login
(`app/trivial_server.py`, Gradio being the app layer's), driven by the same clients, gives Gradio's own floor of
server CPU per call. Figures, never assertions: the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import psutil

from rlhf.settings import help_of, setting

PASSWORD = "load-bench-password"
RANKINGS = ["B > A = C > D", "A > B > C > D", "D > C > A = B", "C > A > D > B"]


@dataclass
class LoadSettings:
    annotators: int = setting(50, "annotators ranking at once, one client each")
    rankings: int = setting(600, "acknowledged rankings after which the run ends")
    overlap: int = setting(1, "annotators per comparison (the queue's overlap)")
    kill_at: float = setting(0.5, "share of `rankings` acknowledged when the server is killed with SIGKILL (0: never)")
    reconnect_timeout_s: float = setting(300, "how long an annotator tries to sign in again")
    reference: bool = setting(True, "also measure the trivial Gradio endpoint")
    seed: int = setting(0, "seeds the rankings the annotators give")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server process on a fixed port, with the CPU time of the process that answers
    requests sampled in the background, so the figure up to a SIGKILL is still known after
    it. (Its sampler child is left out: nothing samples in this benchmark, and the child's
    start-up, importing torch, would be counted against the first rankings.)"""

    def __init__(self, command: list[str], port: int, log_path: Path):
        self.command, self.port, self.log_path = command, port, log_path
        self.process: subprocess.Popen | None = None
        self.cpu_s = 0.0
        self._sampler: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> float:
        """Start and wait until the page answers; returns the seconds that took."""
        started = time.monotonic()
        self.process = started_server(self.command, self.url, self.log_path, timeout)
        self._sampler = threading.Thread(target=self._sample_cpu, args=(self.process.pid,), daemon=True)
        self._sampler.start()
        return time.monotonic() - started

    def _sample_cpu(self, pid: int) -> None:
        try:
            process = psutil.Process(pid)
            while True:
                self.cpu_s = sum(process.cpu_times()[:2])
                time.sleep(0.2)
        except psutil.Error:
            return  # the process is gone: cpu_s keeps its last figure

    def kill(self) -> int:
        """SIGKILL the server's main process, as `kill -9 PID` does; then end any children
        it left behind and return how many there were."""
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            child.kill()
        return len(alive)

    def stop(self) -> None:
        if self.process is not None:
            ended(self.process)


def started_server(command: list[str], url: str, log_path: Path, timeout: float) -> subprocess.Popen:
    """`command` (an `rlhf serve`) started with its output appended to `log_path`, once its
    page at `url` answers; RuntimeError (the log named) when it exits or stays silent for
    `timeout` s (then it is ended)."""
    started = time.monotonic()
    with open(log_path, "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url + "/", timeout=10) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    ended(process)
    raise RuntimeError(f"the server did not answer within {timeout} s; see {log_path}")


def ended(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM, and SIGKILL after `grace` s if it is still running; returns once it has ended."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)


@dataclass
class Tally:
    """What the annotators saw, shared between their threads."""
    acknowledged_ids: set[int] = field(default_factory=set)
    acknowledged: int = 0
    signed_in: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    failed_requests: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)

    def record(self, reply: dict, latency_ms: float) -> None:
        with self.lock:
            self.latencies_ms.append(latency_ms)
            if reply.get("status") in ("stored", "already_stored"):
                self.acknowledged += 1
            if reply.get("ranking_id") is not None:
                self.acknowledged_ids.add(int(reply["ranking_id"]))

    def sign_in(self) -> None:
        with self.lock:
            self.signed_in += 1

    def failure(self, error: Exception) -> None:
        with self.lock:
            self.failed_requests += 1
            key = f"{type(error).__name__}: {str(error)[:120]}"
            self.failures[key] = self.failures.get(key, 0) + 1


def handle(item: dict) -> str | None:
    """The opaque hand-out token the page sends back with a ranking (None: nothing waits)."""
    return item.get("handout")


def annotate(name: str, url: str, tally: Tally, rng: random.Random, reconnect_timeout_s: float) -> None:
    from gradio_client import Client

    client, item, down_since = None, None, None
    while not tally.done.is_set():
        try:
            if client is None:
                client = Client(url, auth=(name, PASSWORD), verbose=False, max_workers=2, analytics_enabled=False)
                tally.sign_in()
                item = client.predict(api_name="/next_comparison")
                down_since = None
            if handle(item) is None:
                return  # the queue has nothing more for this annotator
            started = time.perf_counter()
            reply = client.predict(handle(item), rng.choice(RANKINGS), fetch_next=True, api_name="/submit_ranking")
            tally.record(reply, (time.perf_counter() - started) * 1000)
            item = reply["next"]
        except Exception as error:  # noqa: BLE001 - the server is down or restarting: sign in again
            tally.failure(error)
            if client is not None:
                client.close()
            client = None
            down_since = down_since or time.monotonic()
            down_for = time.monotonic() - down_since
            if down_for > reconnect_timeout_s:
                return
            time.sleep(min(0.5 + down_for / 4, 5) * rng.uniform(0.5, 1.5))  # back off, as a page retrying would
    if client is not None:
        client.close()


def drive(url: str, names: list[str], tally: Tally, until: int, settings: LoadSettings,
          triggers: list[tuple[Callable[[], bool], Callable[[], None]]] = ()) -> float:
    """Run the annotators until `until` rankings are acknowledged, calling each trigger's
    function once when its condition first holds (in order). Returns the wall time."""
    rng = random.Random(settings.seed)
    threads = [threading.Thread(target=annotate, args=(name, url, tally, random.Random(rng.random()),
                                                      settings.reconnect_timeout_s), daemon=True)
               for name in names]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    pending = list(triggers)
    while tally.acknowledged < until and any(t.is_alive() for t in threads):
        while pending and pending[0][0]():
            pending.pop(0)[1]()
        time.sleep(0.05)
    tally.done.set()
    for thread in threads:
        thread.join(timeout=60)
    return time.monotonic() - started


class Window:
    """Rankings, server CPU, time and latencies between two moments of a run: the steady
    part, after every annotator has signed in (sign-ins are scrypt checks, not rankings)
    and before the kill."""

    def __init__(self, server: Server, tally: Tally):
        self.server, self.tally = server, tally
        self.start_state = self.end_state = None

    def _state(self) -> tuple[int, float, float, int]:
        return self.tally.acknowledged, self.server.cpu_s, time.monotonic(), len(self.tally.latencies_ms)

    def open(self) -> None:
        self.start_state = self._state()

    def close(self) -> None:
        if self.end_state is None and self.start_state is not None:
            self.end_state = self._state()

    def figures(self) -> dict:
        (n0, cpu0, t0, l0), (n1, cpu1, t1, l1) = self.start_state, self.end_state
        rankings = max(n1 - n0, 1)
        return {"rankings": n1 - n0, "per_s": round(rankings / (t1 - t0), 1),
                "server_cpu_ms_each": round(1000 * (cpu1 - cpu0) / rankings, 1),
                "latency": percentiles(self.tally.latencies_ms[l0:l1])}


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    cuts = statistics.quantiles(values, n=100)
    return {"p50_ms": round(statistics.median(values), 1), "p95_ms": round(cuts[94], 1),
            "p99_ms": round(cuts[98], 1)}


def prepare_home(root: Path, settings: LoadSettings):
    """A fresh home with the annotators and enough comparisons that the queue never runs
    dry; the base model is a placeholder, since nothing samples (ready_target 0)."""
    from rlhf.collect.annotation import Annotation
    from rlhf.auth import User, create_user
    from rlhf.home import BASE_VERSION, Home
    from rlhf.collect.workbench import Workbench
    from rlhf.home import default_prompts
    from storage import comparisons, prompts
    from storage.comparisons import NewCompletion

    home = Home(root)
    home.prepare()
    model_dir = home.model_dir(BASE_VERSION)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    names = [f"annotator-{i:02d}" for i in range(settings.annotators)]
    with Workbench(home) as wb:
        wb.init()
        for name in names:
            create_user(wb.store, name, "annotator", PASSWORD)
        Annotation(wb).set_config(User("admin", "admin"), ready_target=0, gold_rate=0.0, overlap=settings.overlap)
        texts = [row["prompt"] for row in default_prompts()]
        wanted = (settings.rankings // settings.overlap) + 2 * settings.annotators
        with wb.store.transaction() as cur:
            prompt_ids = prompts.in_sets(cur, None)["id"].tolist()
            for i in range(wanted):
                comparisons.add(cur, prompt_ids[i % len(prompt_ids)],
                                [NewCompletion(texts[(i + j) % len(texts)] * 3, BASE_VERSION) for j in range(4)])
    return home, names


def store_figures(home, overlap: int, acknowledged_ids: set[int]) -> dict:
    from rlhf.collect.workbench import Workbench
    from storage import integrity

    with Workbench(home) as wb:
        cur = wb.store.cursor()
        figures = integrity.ranking_figures(cur, overlap)
        stored_ids = integrity.human_ranking_ids(cur)
    return {**figures, "lost": len(acknowledged_ids - stored_ids)}


def measure_workbench(settings: LoadSettings, root: Path) -> dict:
    home, names = prepare_home(root / "home", settings)
    port = free_port()
    server = Server([sys.executable, "-m", "app.cli", "serve", "--home", str(home.root), "--port", str(port)],
                    port, root / "serve.log")
    server.start()
    tally = Tally()
    steady, killed = Window(server, tally), {}

    def kill_and_restart() -> None:
        steady.close()
        killed["after"] = tally.acknowledged
        killed["children_left"] = server.kill()
        killed["restart_s"] = round(server.start(), 1)

    kill_after = int(settings.rankings * settings.kill_at)
    triggers = [(lambda: tally.signed_in >= settings.annotators, steady.open)]
    if settings.kill_at > 0:
        triggers.append((lambda: tally.acknowledged >= kill_after, kill_and_restart))
    # gradio_client prints a traceback for each stream the kill breaks: keep them out of the report
    with open(root / "client-errors.log", "w") as errors, contextlib.redirect_stderr(errors):
        wall_s = drive(server.url, names, tally, settings.rankings, settings, triggers)
    steady.close()
    server.stop()
    return {
        "acknowledged": tally.acknowledged, **store_figures(home, settings.overlap, tally.acknowledged_ids),
        "failed_requests": tally.failed_requests,
        "failures": dict(sorted(tally.failures.items(), key=lambda kv: -kv[1])[:5]),
        "killed_after": killed.get("after"), "restart_s": killed.get("restart_s"),
        "children_left_by_kill": killed.get("children_left"),
        "steady": steady.figures(),
        "latency_all": percentiles(tally.latencies_ms),
        "rankings_per_s_overall": round(tally.acknowledged / wall_s, 1),
    }


def measure_reference(settings: LoadSettings, root: Path, calls: int) -> dict:
    """The same clients against the trivial endpoint, over as many calls as the
    workbench's steady window had."""
    port = free_port()
    server = Server([sys.executable, "-m", "app.trivial_server", "--port", str(port), "--password", PASSWORD],
                    port, root / "trivial.log")
    server.start()
    tally = Tally()
    steady = Window(server, tally)
    names = [f"annotator-{i:02d}" for i in range(settings.annotators)]
    drive(server.url, names, tally, 10 ** 9, settings,
          [(lambda: tally.signed_in >= settings.annotators, steady.open),
           (lambda: tally.acknowledged >= steady.start_state[0] + calls, steady.close),
           (lambda: True, tally.done.set)])
    steady.close()
    server.stop()
    return steady.figures()


def run(settings: LoadSettings) -> dict:
    root = Path(tempfile.mkdtemp(prefix="rlhf-bench-load-"))
    result = {"settings": asdict(settings), "workbench": measure_workbench(settings, root)}
    if settings.reference:
        ours = result["workbench"]["steady"]
        floor = measure_reference(settings, root, max(ours["rankings"], 1))
        result["trivial_gradio"] = floor
        result["cpu_ratio_to_gradio_floor"] = (round(ours["server_cpu_ms_each"] / floor["server_cpu_ms_each"], 2)
                                               if floor["server_cpu_ms_each"] else None)
    shutil.rmtree(root, ignore_errors=True)  # kept when the run failed: its logs say why
    return result


def print_report(result: dict) -> None:
    w, s = result["workbench"], result["settings"]
    steady = w["steady"]
    killed = (f"SIGKILLed after {w['killed_after']} rankings and back in {w['restart_s']} s"
              if w["killed_after"] is not None else "never killed")
    print(f"{s['annotators']} annotators, overlap {s['overlap']}; the server was {killed}")
    print(f"  acknowledged {w['acknowledged']}, stored {w['stored']}, lost {w['lost']}, duplicates {w['duplicates']}, "
          f"over overlap {w['over_overlap']}, without ranks {w['without_ranks']}")
    print(f"  failed requests (while it was down) {w['failed_requests']}, children left by the kill "
          f"{w['children_left_by_kill']}")
    for failure, count in w["failures"].items():
        print(f"    {count} x {failure}")
    print(f"  steady ({steady['rankings']} rankings, signed in, before the kill): {steady['per_s']} rankings/s, "
          f"submit+next {steady['latency']}, server CPU {steady['server_cpu_ms_each']} ms per ranking")
    print(f"  whole run: {w['rankings_per_s_overall']} rankings/s, submit+next {w['latency_all']}")
    if "trivial_gradio" in result:
        t = result["trivial_gradio"]
        print(f"trivial Gradio endpoint, same clients ({t['rankings']} calls): {t['per_s']} calls/s, "
              f"latency {t['latency']}, server CPU {t['server_cpu_ms_each']} ms per call")
        print(f"  workbench CPU per ranking / Gradio floor: {result['cpu_ratio_to_gradio_floor']}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.bench load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(LoadSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                                help=f"do not: {help_of(LoadSettings, f.name)}")
        else:
            kind = {"int": int, "float": float}[f.type if isinstance(f.type, str) else f.type.__name__]
            parser.add_argument(flag, type=kind, default=f.default, help=f"{help_of(LoadSettings, f.name)} (default {f.default})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    result = run(LoadSettings(**{f.name: getattr(args, f.name) for f in fields(LoadSettings)}))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
