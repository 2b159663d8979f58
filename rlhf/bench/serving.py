"""A fresh home for a benchmark, and a served workbench for the benchmarks that go through
a real server (`first`, `annotate`)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path

from rlhf.home import Home


def fresh_home(model_dir: Path, bench: str) -> Path:
    """A home as `rlhf init` leaves it, in a new temporary directory of its own named for
    the benchmark (``rlhf-bench-BENCH-XXXXXXXX``, so two runs never share one), with its
    base model linked from `model_dir` (copied where links cannot be made) rather than
    converted again."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix=f"rlhf-bench-{bench}-"))
    home = Home(root)
    home.prepare()
    home.link_base_model(model_dir)
    return root


@contextmanager
def served(root: Path):
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
