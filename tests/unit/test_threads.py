"""The torch threads beside the server (rlhf.modeling.threads): a training job's worker
leaves one core to the server above two cores, takes all of them on one or two, and
RLHF_WORKER_THREADS when set; a sampler child always leaves one."""

from __future__ import annotations

import pytest

from rlhf.errors import UserError
from rlhf.modeling.threads import ENV_VAR, available_cores, sampler_threads, worker_threads


@pytest.mark.parametrize("cores, threads", [(1, 1), (2, 2), (3, 2), (4, 3), (16, 15), (0, 1)])
def test_a_worker_leaves_one_core_to_the_server_above_two_cores(cores, threads):
    assert worker_threads(cores, {}) == threads


@pytest.mark.parametrize("value, threads", [("1", 1), (" 6 ", 6), ("32", 32), ("", 15)])
def test_the_setting_says_how_many_whatever_the_cores(value, threads):
    assert worker_threads(16, {ENV_VAR: value}) == threads


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_setting_is_refused_in_one_sentence(value):
    with pytest.raises(UserError, match=rf"^RLHF_WORKER_THREADS must be a whole number of threads, at least 1, "
                                        rf"not '{value}'; unset it"):
        worker_threads(16, {ENV_VAR: value})


@pytest.mark.parametrize("cores, threads", [(1, 1), (2, 1), (3, 2), (16, 15), (0, 1)])
def test_a_sampler_child_always_leaves_one_core_to_the_server(cores, threads):
    assert sampler_threads(cores) == threads


def test_the_available_cores_are_at_least_one():
    assert available_cores() >= 1


@pytest.mark.parametrize("cores, ranks, threads", [(2, "2", 1), (16, "2", 7), (16, "4", 3), (3, "4", 1), (16, "", 15)])
def test_the_ranks_of_a_launched_job_share_the_cores(cores, ranks, threads):
    assert worker_threads(cores, {"LOCAL_WORLD_SIZE": ranks}) == threads
