"""Benchmarks: `python -m rlhf.bench generate|first|annotate|train` (see --help of each).

Prints medians over repeats, never asserts: this machine is shared, so read the
figures as ratios taken in one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers

from rlhf import bench_ctranslate2, precision
from rlhf.generate import SamplingParams, _eos_ids, mask_through_first_eos, render_prompts, sample
from rlhf.home import Home, ensure_default_model
from rlhf.models import load_policy

BENCH_PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Write a haiku about a lighthouse.",
    "Give me three tips for a job interview.",
    "What is the difference between a list and a tuple in Python?",
    "How do vaccines train the immune system?",
    "Suggest a name for a bakery that sells bread made with local grain.",
    "Summarise the plot of Romeo and Juliet in one paragraph.",
    "How can I make my morning routine less rushed?",
]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


ENGINE_K = 4


def _conversations(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": p}] for p in BENCH_PROMPTS[:n]]


def _full_sort_top_p(policy, conversations: list[list[dict]], k: int, params: SamplingParams) -> int:
    """The workbench's call with transformers' own temperature and top-p warpers (a full
    sort of the vocabulary per row and step), as `rlhf.generate` sampled before
    `rlhf.nucleus`: the pre-filter lever, measured. Returns the tokens generated."""
    tokenizer = policy.tokenizer
    tokenizer.padding_side = "left"
    inputs = tokenizer(render_prompts(policy, conversations), return_tensors="pt", padding=True,
                       add_special_tokens=False).to(policy.model.device)
    eos_ids = _eos_ids(policy)
    with torch.inference_mode():
        output = policy.model.generate(**inputs, do_sample=True, temperature=params.temperature, top_p=params.top_p,
                                       top_k=0, num_return_sequences=k, max_new_tokens=params.max_new_tokens,
                                       eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id)
    mask, _ = mask_through_first_eos(output[:, inputs["input_ids"].shape[1]:], eos_ids)
    return int(mask.sum())


def generation_engines(policy, threads: int, levers: bool) -> tuple[dict, list[str]]:
    """name -> run(conversations, k, params) -> tokens, for the workbench's sampler as
    shipped, the levers when asked, and CTranslate2 int8 and float32 when installed; and
    the lines that say what is missing."""
    dtype = str(policy.model.dtype).removeprefix("torch.")
    engines = {f"workbench sampler ({dtype})":
               lambda conversations, k, params: sum(s.num_tokens for drawn in sample(policy, conversations, k, params)
                                                    for s in drawn)}
    if levers:
        engines[f"  lever off: full-sort top-p ({dtype})"] = lambda c, k, p: _full_sort_top_p(policy, c, k, p)
    notes = []
    ct2_version = bench_ctranslate2.version()
    if ct2_version is None:
        notes.append("CTranslate2 is not installed (pip install 'rlhf-workbench[bench]'): no reference engine.")
        return engines, notes
    if policy.model.device.type != "cpu":
        notes.append("CTranslate2 runs on the CPU here; the reference is for CPU runs.")
        return engines, notes
    converted = bench_ctranslate2.converted(Path(policy.source))
    eos_ids = _eos_ids(policy)
    for compute_type in bench_ctranslate2.COMPUTE_TYPES:
        engine = bench_ctranslate2.Engine(converted, compute_type, threads, policy.tokenizer, eos_ids)

        def run(conversations, k, params, engine=engine):
            texts = render_prompts(policy, conversations)
            return engine([policy.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], k, params)

        engines[f"CTranslate2 {ct2_version} {compute_type}"] = run
    return engines, notes


def bench_engines(model_dir: str, repeats: int, max_new_tokens: int, threads: int, levers: bool) -> dict:
    """tokens/s of each engine on the 8 BENCH_PROMPTS x K=4 at temperature 0.8 / top-p 0.95,
    medians over `repeats`, the engines taken in turn within each repeat (so a busy spell
    on a shared machine falls on all of them), with each one's ratio to CTranslate2 int8."""
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, seed=0)
    policy = load_policy(model_dir)
    engines, notes = generation_engines(policy, threads, levers)
    conversations = _conversations(len(BENCH_PROMPTS))
    for run in engines.values():  # warm-up: first-call allocations, one-time kernels
        run(conversations[:1], 2, dataclasses.replace(params, max_new_tokens=4))
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for repeat in range(repeats):
        for name, run in engines.items():
            start = time.perf_counter()
            tokens = run(conversations, ENGINE_K, dataclasses.replace(params, seed=repeat))
            rates[name].append(tokens / (time.perf_counter() - start))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    reference = next((rate for name, rate in medians.items() if name.endswith(" int8")), None)
    rows = [{"engine": name, "tokens_per_s": round(rate, 1),
             "vs_ctranslate2_int8": round(rate / reference, 2) if reference else None} for name, rate in medians.items()]
    return {"precision": precision.current(policy.model.device.type).describe(), "prompts": len(conversations),
            "k": ENGINE_K, "repeats": repeats, "rows": rows, "notes": notes}


def bench_generate(model_dir: str, repeats: int, max_new_tokens: int, with_reference: bool) -> list[dict]:
    """tokens/s of `sample` batched across prompts, beside the same prompts sampled one
    prompt per `generate` call (the reference), in one run."""
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, seed=0)
    policy = load_policy(model_dir)
    sample(policy, _conversations(1), 2, params)  # warm-up
    paths = {"batched across prompts": None}
    if with_reference:
        paths["one prompt per call"] = 1
    rows = []
    for path_name, batch_prompts in paths.items():
        for n_prompts in (1, 4, 8):
            if batch_prompts == 1 and n_prompts == 1:
                continue  # the same call as batched
            conversations = _conversations(n_prompts)
            rates, seconds = [], []
            for repeat in range(repeats):
                start = time.perf_counter()
                result = sample(policy, conversations, 4, SamplingParams(**{**params.as_dict(), "seed": repeat}),
                                batch_prompts=batch_prompts or n_prompts)
                elapsed = time.perf_counter() - start
                rates.append(sum(s.num_tokens for samples in result for s in samples) / elapsed)
                seconds.append(elapsed)
            rows.append({
                "path": path_name,
                "case": f"{n_prompts} prompt{'s' if n_prompts > 1 else ''} x K=4",
                "tokens_per_s": round(statistics.median(rates), 1),
                "seconds": round(statistics.median(seconds), 2),
                "repeats": repeats,
            })
    return rows


def print_engines(model: str, threads: int, max_new_tokens: int, result: dict) -> None:
    print(f"generation: {model}, {result['prompts']} prompts x K={result['k']}, {max_new_tokens} new tokens, "
          f"temperature 0.8 / top-p 0.95, {threads} threads, median of {result['repeats']}")
    print(f"  the workbench samples in {result['precision']}")
    print(f"  {'engine':<40} {'tokens/s':>9} {'vs CT2 int8':>12}")
    for row in result["rows"]:
        ratio = "" if row["vs_ctranslate2_int8"] is None else f"{row['vs_ctranslate2_int8']:.2f}x"
        print(f"  {row['engine']:<40} {row['tokens_per_s']:>9.1f} {ratio:>12}")
    for note in result["notes"]:
        print(f"  {note}")


def _fresh_home(model_dir: Path) -> Path:
    """A home as `rlhf init` leaves it, in a temporary directory, with its base model linked
    from `model_dir` (copied where links cannot be made) rather than converted again."""
    import shutil
    import tempfile

    from rlhf.home import BASE_VERSION

    root = Path(tempfile.mkdtemp(prefix="rlhf-bench-"))
    home = Home(root)
    home.prepare()

    def link_or_copy(source, destination):
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)

    shutil.copytree(model_dir, home.model_dir(BASE_VERSION), copy_function=link_or_copy)
    return root


@contextmanager
def _served(root: Path):
    """`rlhf serve` on `root` at a free port, yielding (url, seconds from launch until it
    answered, the annotator 'bench' signed in as the client it answered); stopped and the
    home removed afterwards."""
    import shutil
    import socket
    import subprocess

    from gradio_client import Client

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server_log = open(root / "serve.log", "w")
    launched = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--home", str(root), "--port", str(port)],
                              stdout=server_log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client = Client(url, auth=("bench", "bench-password"), verbose=False)
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.25)
        yield url, time.monotonic() - launched, client
    finally:
        server.terminate()
        server.wait(timeout=60)
        server_log.close()
        shutil.rmtree(root, ignore_errors=True)


def bench_first(model_dir: Path, repeats: int) -> dict:
    """Seconds from `rlhf serve` answering, on a home fresh from `rlhf init` (its base model
    linked from `model_dir`), until an annotator's `/next_comparison` hands out a comparison,
    the median over `repeats` fresh homes; `rlhf init`'s time and the server's own start-up
    (until it answers) beside."""
    import subprocess

    from rlhf.auth import create_user
    from rlhf.workbench import Workbench

    waits, startups, inits = [], [], []
    for _ in range(repeats):
        root = _fresh_home(model_dir)
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "app.cli", "init", "--home", str(root)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, check=True)
        inits.append(time.monotonic() - start)
        with Workbench(Home(root)) as wb:
            create_user(wb.store, "bench", "annotator", "bench-password")
        with _served(root) as (_, startup, client):
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


def bench_annotate(model_dir: Path, submissions: int, ready_target: int) -> dict:
    """Latency of the annotation loop through a real server: an annotator's client submits a
    ranking and asks for the next comparison, while the server's pre-generator samples
    new comparisons with the default model in the background (the worst case on 2 cores)."""
    from gradio_client import Client

    from rlhf.annotation import Annotation
    from rlhf.auth import User, create_user
    from rlhf.home import BASE_VERSION
    from rlhf.workbench import Workbench, default_prompts
    from storage import comparisons, prompts
    from storage.comparisons import NewCompletion

    root = _fresh_home(model_dir)
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
    with _served(root) as (url, _, client):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.bench", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    generate = sub.add_parser("generate", help="tokens/s of the workbench's sampler beside CTranslate2 int8 and "
                              "float32 on the default model (8 prompts x K=4)")
    generate.add_argument("--home", default=None, help="workbench home whose base model to use")
    generate.add_argument("--model", default=None, help="model directory or hub id (default: the home's base)")
    generate.add_argument("--repeats", type=int, default=3)
    generate.add_argument("--max-new-tokens", type=int, default=128)
    generate.add_argument("--threads", type=int, default=2, help="CPU threads for every engine")
    generate.add_argument("--levers", action="store_true",
                          help="also the sampler with a lever switched off (transformers' full-sort top-p)")
    generate.add_argument("--batching", action="store_true",
                          help="instead: the sampler on 1, 4 and 8 prompts, batched and one prompt per call")
    generate.add_argument("--no-reference", action="store_true", help="with --batching: skip one prompt per call")
    generate.add_argument("--json", action="store_true")
    annotate = sub.add_parser("annotate", help="submit-to-next-comparison latency through a served workbench")
    annotate.add_argument("--home", default=None, help="workbench home whose base model to use")
    annotate.add_argument("--submissions", type=int, default=40)
    annotate.add_argument("--ready-target", type=int, default=64,
                          help="comparisons the pre-generator wants beyond the pre-filled queue, so that it samples "
                          "all through the run (0: it stays idle)")
    first = sub.add_parser("first", help="seconds from `rlhf serve` answering on a fresh home to the first "
                           "comparison an annotator gets")
    first.add_argument("--home", default=None, help="workbench home whose base model to use")
    first.add_argument("--model", default=None, help="base model directory (default: the home's base)")
    first.add_argument("--repeats", type=int, default=3, help="fresh homes, one server each")
    train = sub.add_parser("train", help="each training method on the default model: s/step, examples/s, memory")
    train.add_argument("--methods", default="reward,sft,dpo,kto,ppo,grpo,rloo",
                       help="comma-separated; ppo/grpo/rloo use the reward model trained first")
    train.add_argument("--pairs", type=int, default=200, help="preference pairs in the standard offline job")
    train.add_argument("--home", default=None, help="keep the bench home here (default: a temporary directory)")
    train.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    if args.what == "train":
        from rlhf.bench_train import bench_train, print_table

        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        rows = bench_train(methods, args.pairs, args.home, keep=bool(args.home))
        print(json.dumps(rows, indent=2) if args.json else "")
        if not args.json:
            print_table(rows)
        return 0
    if args.what == "first":
        model_dir = Path(args.model) if args.model else ensure_default_model(Home.resolve(args.home))
        print(json.dumps(bench_first(model_dir, args.repeats), indent=2))
        return 0
    if args.what == "annotate":
        result = bench_annotate(ensure_default_model(Home.resolve(args.home)), args.submissions, args.ready_target)
        print(json.dumps(result, indent=2))
        return 0
    model = args.model or str(ensure_default_model(Home.resolve(args.home)))
    torch.set_num_threads(args.threads)
    if not args.batching:
        result = bench_engines(model, args.repeats, args.max_new_tokens, args.threads, args.levers)
        if args.json:
            print(json.dumps({"model": model, "threads": args.threads, "max_new_tokens": args.max_new_tokens,
                              **result}, indent=2))
            return 0
        print_engines(model, args.threads, args.max_new_tokens, result)
        return 0
    rows = bench_generate(model, args.repeats, args.max_new_tokens, not args.no_reference)
    summary = {
        "model": model,
        "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "threads": torch.get_num_threads(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "results": rows,
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    print(f"model {model} on {summary['device']} ({summary['threads']} threads), "
          f"max_new_tokens {args.max_new_tokens}, median of {args.repeats}")
    for row in rows:
        print(f"  {row['path']:<24} {row['case']:<16} {row['tokens_per_s']:>7.1f} tokens/s {row['seconds']:>7.2f} s")
    print(f"  peak memory: {summary['peak_rss_mib']} MiB RSS"
          + (f", {summary['peak_cuda_mib']} MiB CUDA" if summary["peak_cuda_mib"] is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
