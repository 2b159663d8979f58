"""The app's wiring, done once: every service the server holds, built in `serve()` (or by
a test) and handed to each tab and to the API, and the one way a handler learns who is
signed in."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.session import SignIn, user_error
from rlhf.auth import AccountSettings, User, require_role, session_user
from rlhf.collect import exports
from rlhf.collect.annotation import Annotation
from rlhf.collect.pregenerate import PreGenerator
from rlhf.collect.reports import Reports
from rlhf.collect.workbench import Workbench
from rlhf.compare.service import Compare
from rlhf.jobs.runner import JobRunner
from rlhf.jobs.service import Jobs
from rlhf.collect.sampler_process import SamplerProcess

ANY_ROLE = ("annotator", "researcher", "admin")


@dataclass(frozen=True)
class AppContext:
    """The services of one running workbench. `research` samples for side by side, battles
    and evaluations in a child process of its own (None: in the server's process, as unit
    tests do); pre-generation has its own in `pregenerator`."""

    wb: Workbench
    annotation: Annotation
    pregenerator: PreGenerator
    jobs: Jobs
    runner: JobRunner
    compare: Compare
    reports: Reports
    sign_in: SignIn
    sweeper: exports.Sweeper
    research: SamplerProcess | None = None

    @classmethod
    def create(cls, wb: Workbench, research: SamplerProcess | None = None,
               accounts: AccountSettings = AccountSettings()) -> AppContext:
        annotation = Annotation(wb)
        jobs = Jobs(wb.home, wb.store)
        return cls(wb=wb, annotation=annotation, pregenerator=PreGenerator(annotation), jobs=jobs,
                   runner=JobRunner(jobs), compare=Compare(wb, sampler=research), reports=Reports(wb),
                   sign_in=SignIn(wb.store, accounts), sweeper=exports.Sweeper(wb.home), research=research)

    def user(self, request: gr.Request | None, *roles: str, changing_password: bool = False) -> User:
        """The signed-in user (from Gradio's auth cookie, never from the request body), looked
        up in the store on every request (a disabled account, or one that must first choose a
        new password, is refused), and refused unless they hold one of `roles` (any role when
        none are named)."""
        name = getattr(request, "username", None) if request is not None else None
        with user_error():
            user = session_user(self.wb.store, name, changing_password=changing_password)
            require_role(user, *(roles or ANY_ROLE))
        return user
