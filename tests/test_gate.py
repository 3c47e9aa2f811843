"""The model gate: one holder, first come first served, a bounded waiting line."""

from __future__ import annotations

import asyncio

import pytest

from daemon.gate import ModelGate
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
