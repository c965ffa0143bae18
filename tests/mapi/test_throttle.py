"""Logon brute-force protection: counters per user and per address, exponential
delays after the free failures, a cap, forgetting after the window or on success."""

from __future__ import annotations

import sys
import threading

import pytest

from mapi.access.throttle import LogonThrottle


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


def test_the_guesser_is_throttled_not_the_victim():
    """Failures at alice from one address delay that address, never alice elsewhere."""
    throttle = LogonThrottle(free_failures=2, base_delay=5.0, address_free_failures=2)
    fail(throttle, 12, user="alice", addr="10.0.0.1")
    assert throttle.delay("alice", "10.0.0.1", 0.0) > 0  # the guesser
    assert throttle.delay("ALICE", "10.0.0.2", 0.0) == 0  # alice from her own desk
    # The guessing address is delayed for other users too (the address's counter)...
    assert throttle.delay("bob", "10.0.0.1", 0.0) > 0
    assert throttle.delay("bob", "10.0.0.2", 0.0) == 0


def test_many_addresses_meet_a_softer_per_user_ceiling_that_spares_familiar_ones():
    throttle = LogonThrottle(
        free_failures=5, user_free_failures=10, base_delay=1.0, max_delay=300.0,
        user_max_delay=30.0,
    )  # fmt: skip
    throttle.succeeded("alice", "10.0.0.9", 0.0)  # where alice works from
    for i in range(200):  # a botnet: one guess per address
        throttle.failed("alice", f"192.0.2.{i}", 1.0)
    # A new place is delayed, but never beyond the per-user ceiling...
    assert 0 < throttle.delay("alice", "198.51.100.1", 1.0) <= 30.0
    # ...and alice's familiar address is not delayed at all.
    assert throttle.delay("alice", "10.0.0.9", 1.0) == 0
    # Familiarity fades.
    late = LogonThrottle(user_free_failures=0, familiar_for=10.0)
    late.succeeded("alice", "10.0.0.9", 0.0)
    late.failed("alice", "192.0.2.1", 20.0)
    assert late.delay("alice", "10.0.0.9", 20.0) > 0


def test_a_guesser_retrying_whenever_allowed_cannot_keep_the_owner_out():
    """The issue's weaponised lockout: twelve bad attempts, then one whenever the
    throttle lets the guesser try, for a day, from one address. The owner logs on
    from where she works all along, and from a new place within the soft ceiling."""
    throttle = LogonThrottle()
    throttle.succeeded("alice", "10.0.0.2", 0.0)
    fail(throttle, 12, user="alice", addr="203.0.113.7")
    now = 0.0
    while now < 86400.0:
        now += 60.0
        if throttle.delay("alice", "203.0.113.7", now) == 0:
            throttle.failed("alice", "203.0.113.7", now)
        assert throttle.delay("alice", "10.0.0.2", now) == 0
        assert throttle.delay("alice", "198.51.100.1", now) <= 30.0
    assert throttle.delay("alice", "203.0.113.7", now) > 0  # the guesser is still held


def test_success_and_the_window_forget_failures():
    throttle = LogonThrottle(free_failures=1, base_delay=10.0, window=60.0)
    fail(throttle, 2)
    assert throttle.delay("alice", "10.0.0.1", 0.0) > 0
    assert throttle.delay("alice", "10.0.0.1", 61.0) == 0  # outside the window
    throttle.succeeded("alice", "10.0.0.1", 0.0)
    assert throttle.delay("alice", "10.0.0.1", 0.0) == 0


def test_success_forgives_only_its_own_failures_at_the_address():
    """A valid logon of one's own must not wipe the address's guesses at others."""
    throttle = LogonThrottle(free_failures=3, address_free_failures=3, base_delay=5.0)
    fail(throttle, 4, user="alice")  # guesses at alice from 10.0.0.1
    fail(throttle, 2, user="mallory")  # mallory's own typos
    throttle.succeeded("mallory", "10.0.0.1", 0.0)
    assert throttle.delay("mallory", "10.0.0.2", 0.0) == 0  # mallory's count is gone
    assert throttle.delay("carol", "10.0.0.1", 0.0) > 0  # the address keeps alice's 4
    throttle.succeeded("alice", "10.0.0.1", 0.0)
    assert throttle.delay("carol", "10.0.0.1", 0.0) == 0


def test_answers_to_no_challenge_count_against_the_address_only():
    throttle = LogonThrottle(address_free_failures=1, base_delay=5.0)
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


def test_one_address_moves_the_per_user_ceiling_by_its_free_failures_at_most():
    throttle = LogonThrottle(free_failures=5, user_free_failures=5, base_delay=1.0)
    now = 0.0
    for i in range(100):  # one guesser, trying whenever it may, within the window
        now = i * 30.0
        if throttle.delay("alice", "203.0.113.7", now) == 0:
            throttle.failed("alice", "203.0.113.7", now)
    assert throttle.delay("alice", "198.51.100.1", now) == 0  # a new place: not held
    throttle.failed("alice", "192.0.2.1", now)  # a second address tips it over
    assert throttle.delay("alice", "198.51.100.1", now) > 0


def test_an_ipv6_network_is_one_address_and_mapped_ipv4_is_ipv4():
    throttle = LogonThrottle(free_failures=3, address_free_failures=3, base_delay=5.0)
    for i in range(4):  # rotating through one /64
        throttle.failed("alice", f"2001:db8:1:2::{i + 1:x}", 0.0)
    assert throttle.delay("alice", "2001:db8:1:2::ffff", 0.0) > 0
    assert throttle.delay("bob", "2001:db8:1:2:abcd::1", 0.0) > 0  # the network sprays
    assert throttle.delay("alice", "2001:db8:1:3::1", 0.0) == 0  # another network
    for _ in range(4):
        throttle.failed("carol", "::ffff:192.0.2.7", 0.0)
    assert throttle.delay("carol", "192.0.2.7", 0.0) > 0


def test_one_throttle_counts_every_threads_failures() -> None:
    """The mail doors report from worker threads while the tunnel and the store report
    from the event loop: no failure is lost when they race."""
    throttle = LogonThrottle(free_failures=10**6, address_free_failures=10**6,
                             user_free_failures=10**6, max_entries=10**6)  # fmt: skip

    def guess(n: int) -> None:
        for i in range(2000):
            throttle.failed("alice", f"198.51.{n}.{i % 250}", float(i))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: without the lock, counts get lost
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert throttle._records[("user", "alice")].failures == 8 * 2000
