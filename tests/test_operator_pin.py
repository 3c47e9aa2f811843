"""The operator PIN: its salted hash, `kioskd operator-pin`, the setting, and unlock/lock over real sockets with
the lockout after wrong PINs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from daemon.settings import SettingsError, load_settings
from daemon.visits.pin import hash_pin, pin_hash_problem, verify_pin
from tests.conftest import ROOT
from tests.fakes import ScriptedEngine, Served, request_json, serve
from tests.test_ws_protocol import connect, run

PIN = "2468"
PIN_HASH = hash_pin(PIN)
OPERATOR = "X-Kioskd-Operator"


async def unlock(served: Served, pin: object) -> tuple[int, dict[str, object], dict[str, str]]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.post(served.url + "/api/operator/unlock",
                                                          json={"pin": pin}) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


def code(body: dict[str, object]) -> object:
    error = body["error"]
    assert isinstance(error, dict)
    return error["code"]


# ---- the hash ----

def test_the_hash_is_salted_verifies_only_its_pin_and_is_never_the_pin() -> None:
    again = hash_pin(PIN)
    assert again != PIN_HASH and PIN not in PIN_HASH.split("$", 1)[1]  # a new salt every time
    assert PIN_HASH.startswith("scrypt$") and pin_hash_problem(PIN_HASH) is None
    assert verify_pin(PIN, PIN_HASH) and verify_pin(PIN, again)
    for wrong in ("2469", "", "24680", " 2468", "x" * 100):
        assert not verify_pin(wrong, PIN_HASH), wrong
    assert not verify_pin(PIN, "scrypt$00$00")
    for bad in ("123", "12345678901234", "12a4", "١٢٣٤"):
        with pytest.raises(ValueError, match="4 to 12 digits"):
            hash_pin(bad)


@pytest.mark.parametrize("value", [PIN, "scrypt$abc$def", PIN_HASH[:-1], PIN_HASH.upper(), "sha256$" + "0" * 96])
def test_the_setting_refuses_anything_but_a_hash_without_showing_it(value: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({}, environ={"KIOSKD_OPERATOR_PIN": value})
    message = str(error.value)
    assert "'operator_pin' (from env KIOSKD_OPERATOR_PIN)" in message and "kioskd operator-pin" in message
    assert value not in message
    if value == PIN:
        assert "plain PIN" in message


def test_the_setting_accepts_a_hash_and_masks_it() -> None:
    from daemon.settings import describe

    settings = load_settings({}, environ={"KIOSKD_OPERATOR_PIN": PIN_HASH})
    assert settings.operator_pin == PIN_HASH and describe(settings)["operator_pin"] == "***"
    assert PIN_HASH not in repr(settings)


def test_the_operator_pin_command_reads_stdin_and_prints_the_hash() -> None:
    def command(stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daemon", "operator-pin"], input=stdin, text=True,
                              capture_output=True, cwd=ROOT, timeout=60)

    done = command("97531\n")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert pin_hash_problem(line) is None and verify_pin("97531", line) and "97531" not in line
    for bad in ("12\n", "abcd\n", ""):
        refused = command(bad)
        assert refused.returncode == 2 and "4 to 12 digits" in refused.stderr and refused.stdout == ""


# ---- unlock and lock ----

def test_without_a_pin_there_is_no_operator_unlock() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine()) as served, connect(served) as client:
            assert client.hello["operator_unlock"] is False
            status, body, _ = await unlock(served, PIN)
            assert status == 404 and code(body) == "operator_unlock_disabled"

    run(test)


@pytest.mark.parametrize("body", [{"pin": 2468}, {"pin": ""}, {"pin": "1" * 65}, {}, {"pin": PIN, "user": "x"},
                                  [PIN], PIN])
def test_a_bad_unlock_body_is_400_and_counts_as_no_attempt(body: object) -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(), operator_pin=PIN_HASH, operator_lockout_attempts=1) as served:
            status, answer = await request_json(served, "POST", "/api/operator/unlock", auth=False, json=body)
            assert status == 400 and answer["error"]["type"] == "invalid_request_error", answer
            assert (await unlock(served, PIN))[0] == 200  # the single allowed attempt is still there

    run(test)


def test_the_right_pin_opens_the_archive_until_locked_or_expired() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"]), operator_pin=PIN_HASH, operator_unlock_seconds=1.0) as served:
            async with connect(served) as earlier:
                assert earlier.hello["operator_unlock"] is True
                session = (await earlier.chat("An earlier visitor's question"))[0]["session"]
            status, body, _ = await unlock(served, PIN)
            assert status == 200 and set(body) == {"operator", "expires_in"} and body["expires_in"] == 1.0
            token = str(body["operator"])
            headers = {OPERATOR: token}
            status, listing = await request_json(served, "GET", "/api/sessions", auth=False, headers=headers)
            assert status == 200 and [s["id"] for s in listing["sessions"]] == [session]
            path = f"/api/sessions/{session}"
            assert (await request_json(served, "GET", path, auth=False, headers=headers))[0] == 200
            assert (await request_json(served, "POST", "/api/operator/lock", auth=False, headers=headers))[0] == 204
            status, body2 = await request_json(served, "GET", path, auth=False, headers=headers)
            assert status == 403 and body2["error"]["code"] == "visit_required"
            assert (await request_json(served, "POST", "/api/operator/lock", auth=False, headers=headers))[0] == 204
            # A second unlock expires by itself.
            headers = {OPERATOR: str((await unlock(served, PIN))[1]["operator"])}
            assert (await request_json(served, "GET", path, auth=False, headers=headers))[0] == 200
            await asyncio.sleep(1.1)
            assert (await request_json(served, "GET", path, auth=False, headers=headers))[0] == 403

    run(test)


def test_wrong_pins_lock_out_even_the_right_one_until_the_lockout_ends() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(), operator_pin=PIN_HASH, operator_lockout_attempts=3,
                         operator_lockout_seconds=1.5) as served:
            for left in (2, 1):
                status, body, _ = await unlock(served, "0000")
                assert status == 403 and code(body) == "wrong_pin", body
                assert body["error"]["attempts_left"] == left  # type: ignore[index]
            status, body, headers = await unlock(served, "0000")
            assert status == 429 and code(body) == "locked_out" and headers["Retry-After"] in ("1", "2"), body
            locked_at = time.monotonic()
            status, body, headers = await unlock(served, PIN)
            assert status == 429 and code(body) == "locked_out", "the right PIN is refused during the lockout"
            assert int(headers["Retry-After"]) >= 1
            await asyncio.sleep(max(0.0, 1.6 - (time.monotonic() - locked_at)))
            status, body, _ = await unlock(served, PIN)
            assert status == 200 and body["operator"], body
            status, body, _ = await unlock(served, "1111")  # the count starts again after a success
            assert status == 403 and body["error"]["attempts_left"] == 2  # type: ignore[index]

    run(test)


def test_parallel_guesses_count_one_by_one() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(), operator_pin=PIN_HASH, operator_lockout_attempts=3) as served:
            answers = await asyncio.gather(*(unlock(served, f"{i:04d}") for i in range(8)))
            statuses = sorted(status for status, _, _ in answers)
            assert statuses == [403, 403] + [429] * 6, statuses

    run(test)
