"""TurnBudget (turn_budget.py): a share of one turn of the event loop, renewed each turn."""

from __future__ import annotations

import asyncio
import time

import uvloop

from cnamd import turn_budget
from cnamd.turn_budget import TurnBudget


def _ask_until_spent(budget: TurnBudget) -> tuple[int, float]:
    """A front's questions, answer after answer, until the share is spent: how many were
    answered, and the seconds they took (bounded)."""
    started = time.perf_counter()
    answered = 0
    while not budget.spent():
        answered += 1
        assert time.perf_counter() - started < 5, "the share never ran out"
    return answered, time.perf_counter() - started


async def test_a_share_runs_out_after_its_time_and_the_next_turn_renews_it() -> None:
    budget = TurnBudget(0.001)
    answered, took = _ask_until_spent(budget)  # the turn's first question opens it
    assert answered > 1 and took >= 0.001
    assert budget.spent()  # and it stays spent for the rest of the turn
    await asyncio.sleep(0)  # the next turn
    answered, took = _ask_until_spent(budget)
    assert answered > 1 and took >= 0.001


async def test_a_share_left_from_an_earlier_turn_is_opened_afresh() -> None:
    """A share opened by one question and never half used is not watched (no callback,
    no extra turn); a later turn's questions get a whole share of their own."""
    budget = TurnBudget(0.004)
    assert not budget.spent()
    await asyncio.sleep(0.005)  # turns go by, longer than the share
    answered, took = _ask_until_spent(budget)
    assert answered > 1 and took >= 0.004


async def test_a_budget_of_nothing_answers_one_question_per_turn() -> None:
    budget = TurnBudget(0.0)
    answered = []
    for _ in range(3):
        answered.append(sum(not budget.spent() for _ in range(5)))
        await asyncio.sleep(0)
    assert answered == [1, 1, 1]


def test_on_uvloop_work_put_off_runs_after_the_timers_due_meanwhile() -> None:
    """What the front relies on, on the daemon's loop: a callback put off once the share
    is spent runs in the next turn after the timers that fell due, with a fresh share
    (asyncio's own loop runs those timers after it, in the same turn)."""
    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(_put_off_after_a_timer()) == ["timer", "put off"]
    finally:
        loop.close()


async def _put_off_after_a_timer() -> list[str]:
    loop = asyncio.get_running_loop()
    budget = TurnBudget(0.0)
    ran: list[str] = []
    assert not budget.spent()
    loop.call_later(0, ran.append, "timer")
    assert budget.spent()
    done = loop.create_future()

    def put_off() -> None:
        ran.append("put off")
        done.set_result(budget.spent())

    loop.call_soon(put_off)
    time.sleep(0.002)  # noqa: ASYNC251 - the timer falls due before this turn ends
    assert await done is False
    return ran


async def test_a_loops_fronts_share_its_budget_and_another_loop_has_its_own() -> None:
    mine = turn_budget.of_running_loop()
    assert turn_budget.of_running_loop() is mine
    assert mine.seconds == turn_budget.TURN_BUDGET

    async def other_loops() -> turn_budget.TurnBudget:
        return turn_budget.of_running_loop()

    assert await asyncio.to_thread(asyncio.run, other_loops()) is not mine
