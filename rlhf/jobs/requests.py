"""Requests from a CLI started while the server holds the store: each is a file in
`jobs/requests/`, answered by a thread of the server's runner with a `.reply.json` beside it.
They submit or cancel a job, or take a backup of the store (`rlhf backup` while a server runs).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from rlhf.errors import UserError
from rlhf.home import Home
from rlhf.jobs.service import JobError, JobRequest, Jobs
from storage import backup
from storage.db import StoreError

REQUEST_WAIT_SECONDS = 60
BACKUP_WAIT_SECONDS = 1800  # a backup writes every table: minutes for a large store
REQUEST_POLL_SECONDS = 0.5


def requests_dir(home: Home) -> Path:
    return home.jobs_dir / "requests"


def send_request(home: Home, payload: dict, wait_seconds: float = REQUEST_WAIT_SECONDS) -> dict:
    """Hand a request to the server's job runner and wait for its answer."""
    directory = requests_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    request_id = uuid.uuid4().hex
    staging = directory / f".{request_id}.tmp"
    staging.write_text(json.dumps(payload))
    staging.rename(directory / f"{request_id}.json")
    reply = directory / f"{request_id}.reply.json"
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if reply.is_file():
            answer = json.loads(reply.read_text())
            reply.unlink(missing_ok=True)
            return answer
        time.sleep(0.2)
    (directory / f"{request_id}.json").unlink(missing_ok=True)
    raise JobError(f"The server did not answer within {wait_seconds:.0f} s (is a job holding it?); try again.")


def answer_requests(jobs: Jobs) -> None:
    """Submit or cancel what CLIs asked for, replying to each in a file beside it."""
    directory = requests_dir(jobs.home)
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.json")):
        if path.name.endswith(".reply.json"):
            continue
        try:
            payload = json.loads(path.read_text())
            if payload.get("action") == "cancel":
                answer = {"message": jobs.cancel(int(payload["job_id"]))}
            elif payload.get("action") == "backup":
                done = backup.write_backup(jobs.store, Path(payload["directory"]))
                answer = {"directory": str(done.path), "tables": done.tables}
            else:
                request = JobRequest(**{k: v for k, v in payload.items() if k != "action"})
                answer = {"job_id": jobs.submit(request)}
        except (UserError, StoreError) as error:
            answer = {"error": str(error)}
        except Exception as error:  # a malformed request file must not stop the runner
            answer = {"error": f"The request could not be read: {error}"}
        reply = path.with_name(path.stem + ".reply.json")
        reply.with_suffix(".tmp").write_text(json.dumps(answer))
        reply.with_suffix(".tmp").rename(reply)
        path.unlink(missing_ok=True)
