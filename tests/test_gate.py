"""The model gate: one holder, first come first served, a bounded waiting line."""

from __future__ import annotations

import asyncio

import pytest

from daemon.gate import ModelGate, TooManyGenerations
from daemon.messages import Busy


async def _holder(gate: ModelGate, name: str, order: list[str], hold: asyncio.Event) -> None:
    await gate.acquire()
    order.append(name)
    await hold.wait()
    gate.release()


def test_waiters_are_served_in_arrival_order() -> None:
    async def scenario() -> list[str]:
        gate, order, hold = ModelGate(max_waiting=5), [], asyncio.Event()
        tasks = []
        for name in "abcd":
            tasks.append(asyncio.create_task(_holder(gate, name, order, hold)))
            await asyncio.sleep(0)
        assert gate.busy and gate.waiting == 3
        hold.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert not gate.busy and gate.waiting == 0
        return order

    assert asyncio.run(scenario()) == list("abcd")


def test_past_the_bound_callers_get_busy_at_once() -> None:
    async def scenario() -> None:
        gate = ModelGate(max_waiting=1)
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await asyncio.wait_for(gate.acquire(), 1)
        gate.release()
        await asyncio.wait_for(waiter, 1)
        assert gate.busy
        gate.release()
        assert not gate.busy

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_line() -> None:
    async def scenario() -> None:
        gate = ModelGate(max_waiting=1)
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.waiting == 0
        gate.release()
        assert not gate.busy
        await asyncio.wait_for(gate.acquire(), 1)  # Free again for the next caller.

    asyncio.run(scenario())


def test_a_waiter_cancelled_as_it_is_handed_the_slot_passes_it_on() -> None:
    async def scenario() -> None:
        gate = ModelGate(max_waiting=2)
        await gate.acquire()
        first = asyncio.create_task(gate.acquire())
        second = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        gate.release()  # Hands the slot to `first`...
        first.cancel()  # ...which gives up before it runs.
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.wait_for(second, 1)
        assert gate.busy and gate.waiting == 0

    asyncio.run(scenario())


def test_waiters_are_told_their_place_and_each_move_up() -> None:
    async def scenario() -> dict[str, list[int]]:
        gate = ModelGate(max_waiting=5)
        await gate.acquire()  # The answer being written.
        seen: dict[str, list[int]] = {name: [] for name in "abc"}
        tasks = {}
        for name in "abc":
            tasks[name] = asyncio.create_task(gate.acquire(seen[name].append))
            await asyncio.sleep(0)
        assert seen == {"a": [1], "b": [2], "c": [3]}
        tasks["b"].cancel()  # b leaves the line: only c, behind it, moves up.
        await asyncio.gather(tasks["b"], return_exceptions=True)
        assert seen == {"a": [1], "b": [2], "c": [3, 2]}
        gate.release()  # a gets the model (and hears nothing more); c is next.
        await asyncio.wait_for(tasks["a"], 1)
        assert seen == {"a": [1], "b": [2], "c": [3, 2, 1]}
        gate.release()
        await asyncio.wait_for(tasks["c"], 1)
        return seen

    assert asyncio.run(scenario()) == {"a": [1], "b": [2], "c": [3, 2, 1]}


def test_a_caller_that_gets_the_model_at_once_is_never_told_a_place() -> None:
    async def scenario() -> list[int]:
        gate, seen = ModelGate(max_waiting=1), []
        await gate.acquire(seen.append)
        gate.release()
        await gate.acquire(seen.append)
        return seen

    assert asyncio.run(scenario()) == []


def test_client_slots_bound_each_client_separately() -> None:
    slots = ModelGate(max_waiting=1).clients
    with slots.hold("10.0.0.7", 1):
        with pytest.raises(TooManyGenerations), slots.hold("10.0.0.7", 1):
            pass
        with slots.hold("10.0.0.8", 1):
            assert (slots.active("10.0.0.7"), slots.active("10.0.0.8")) == (1, 1)
        with slots.hold("10.0.0.7", 0):  # 0: no limit
            assert slots.active("10.0.0.7") == 2
    assert slots.active("10.0.0.7") == 0
    with slots.hold("10.0.0.7", 1):  # Free again once the first one ended.
        pass
