"""Who is asking, and how refusals reach the page: shared by every tab."""

from __future__ import annotations

from contextlib import contextmanager

import gradio as gr

from rlhf.annotation import Annotation
from rlhf.auth import PermissionDenied, User, get_user, require_role
from rlhf.errors import UserError
from rlhf.formats import FormatError
from rlhf.limits import LIMITS
from rlhf.ranking import RankingError

REFUSALS = (UserError, RankingError, FormatError, PermissionDenied)
# Every event has a finite concurrency limit. Sampling for researchers (side by side,
# arena battles, evaluations) shares one small one, page and API alike: it runs in its
# own child process, one request at a time, so more at once would only hold threads.
REQUESTS = {"concurrency_limit": LIMITS.request_concurrency}
RESEARCH_SAMPLING = {"concurrency_id": "research-sampling", "concurrency_limit": LIMITS.research_concurrency}


def current_user(service: Annotation, request: gr.Request | None, *roles: str) -> User:
    """The logged-in user (from Gradio's auth cookie, never from the request body),
    refused unless they hold one of `roles` (any role when none are named)."""
    name = getattr(request, "username", None) if request is not None else None
    user = get_user(service.wb.store, name) if name else None
    with user_error():
        require_role(user, *(roles or ("annotator", "researcher", "admin")))
    return user


@contextmanager
def user_error():
    """Refusals become a `gr.Error`: a toast on the page, an exception for API clients."""
    try:
        yield
    except REFUSALS as error:
        raise gr.Error(str(error), print_exception=False) from None
