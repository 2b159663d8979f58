"""The load benchmark as a crash test: a few annotators, a SIGKILL of the server midway,
and the store checked against what the server acknowledged. Its timings are not asserted
(they belong to `python -m rlhf.bench load`); what it finds in the store is."""

from __future__ import annotations

import pytest

from rlhf.bench.load import LoadSettings, run


@pytest.mark.timeout(600)
def test_nothing_acknowledged_is_lost_across_a_sigkill():
    result = run(LoadSettings(annotators=3, rankings=18, kill_at=0.5, reference=False))
    served = result["workbench"]
    assert served["killed_after"] is not None, "the server was never killed"
    assert served["acknowledged"] >= 18
    assert served["stored"] >= served["acknowledged"]  # an in-flight submit may be stored, not acknowledged
    assert (served["lost"], served["duplicates"], served["over_overlap"], served["without_ranks"]) == (0, 0, 0, 0)
    assert served["children_left_by_kill"] == 0, "the server's sampler child outlived a SIGKILL of the server"
    assert served["steady"]["rankings"] > 0 and served["steady"]["server_cpu_ms_each"] > 0
