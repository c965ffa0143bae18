"""Logon brute-force protection: counters per user and per address, exponential
delays after the free failures, a cap, forgetting after the window or on success."""

from __future__ import annotations

import pytest

from mapi.throttle import LogonThrottle


def fail(throttle: LogonThrottle, times: int, user: str = "alice", addr: str = "10.0.0.1",
         now: float = 0.0) -> None:  # fmt: skip
    for _ in range(times):
        throttle.failed(user, addr, now)


def test_free_failures_then_exponential_delays_with_a_cap():
    throttle = LogonThrottle(free_failures=3, base_delay=1.0, max_delay=8.0)
    fail(throttle, 3)
    assert throttle.delay("alice", "10.0.0.1", 0.0) == 1.0
    assert throttle.delay("alice", "10.0.0.1", 1.0) == 0.0
    fail(throttle, 1, now=1.0)
    assert throttle.delay("alice", "10.0.0.1", 1.0) == 2.0
    fail(throttle, 10, now=2.0)
    assert throttle.delay("alice", "10.0.0.1", 2.0) == 8.0  # capped


def test_user_and_address_are_counted_separately():
    throttle = LogonThrottle(free_failures=2, base_delay=5.0)
    fail(throttle, 3, user="alice", addr="10.0.0.1")
    # Another address trying alice is delayed too (the user's counter)...
    assert throttle.delay("ALICE", "10.0.0.2", 0.0) > 0
    # ...and the guessing address is delayed for other users (the address's counter).
    assert throttle.delay("bob", "10.0.0.1", 0.0) > 0
    assert throttle.delay("bob", "10.0.0.2", 0.0) == 0


def test_success_and_the_window_forget_failures():
    throttle = LogonThrottle(free_failures=1, base_delay=10.0, window=60.0)
    fail(throttle, 2)
    assert throttle.delay("alice", "10.0.0.1", 0.0) > 0
    assert throttle.delay("alice", "10.0.0.1", 61.0) == 0  # outside the window
    throttle.succeeded("alice", "10.0.0.1")
    assert throttle.delay("alice", "10.0.0.1", 0.0) == 0


def test_success_forgives_only_its_own_failures_at_the_address():
    """A valid logon of one's own must not wipe the address's guesses at others."""
    throttle = LogonThrottle(free_failures=3, base_delay=5.0)
    fail(throttle, 4, user="alice")  # guesses at alice from 10.0.0.1
    fail(throttle, 2, user="mallory")  # mallory's own typos
    throttle.succeeded("mallory", "10.0.0.1")
    assert throttle.delay("mallory", "10.0.0.2", 0.0) == 0  # mallory's count is gone
    assert throttle.delay("carol", "10.0.0.1", 0.0) > 0  # the address keeps alice's 4
    throttle.succeeded("alice", "10.0.0.1")
    assert throttle.delay("carol", "10.0.0.1", 0.0) == 0


def test_answers_to_no_challenge_count_against_the_address_only():
    throttle = LogonThrottle(free_failures=1, base_delay=5.0)
    for _ in range(3):
        throttle.failed(None, "10.0.0.1", 0.0)
    assert throttle.delay("alice", "10.0.0.1", 0.0) > 0
    assert throttle.delay("alice", "10.0.0.2", 0.0) == 0


def test_the_table_is_bounded():
    throttle = LogonThrottle(max_entries=100)
    for i in range(1000):
        throttle.failed(f"user{i}", None, 0.0)
    assert len(throttle._records) <= 100


def test_settings_are_checked():
    with pytest.raises(ValueError):
        LogonThrottle(base_delay=0)
