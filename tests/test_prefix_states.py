"""Prefix states with the real model: a state built on top of what the live context already holds is the same
state a cold read gives, so an answer after restoring it is the answer without it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from daemon.prefix_states import MAGIC, SUFFIX, PrefixStates

IDENTITY = {"model": "test", "n_ctx": 512}


@pytest.fixture(scope="module")
def llm(test_model: Path):  # type: ignore[no-untyped-def]
    from llama_cpp import Llama

    return Llama(str(test_model), n_ctx=512, n_threads=2, verbose=False)


def greedy(llm, tokens: list[int], n: int = 12) -> list[int]:  # type: ignore[no-untyped-def]
    out = []
    for token in llm.generate(tokens, temp=0.0, reset=True):  # reset=True: reuse the matching prefix
        out.append(token)
        if len(out) == n:
            break
    return out


def test_a_prefix_built_on_a_shared_start_restores_to_the_cold_answer(llm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    start = llm.tokenize(b"You are the helpful assistant of a library kiosk. Venue information:")
    first = start + llm.tokenize(b" The library opens at nine.", add_bos=False)
    second = start + llm.tokenize(b" Printing costs two yuan a page.", add_bos=False)
    question = llm.tokenize(b" Question: how much is printing? Answer:", add_bos=False)
    llm.reset()
    cold = greedy(llm, second + question)

    states = PrefixStates(tmp_path, IDENTITY)
    assert states.ensure(llm, first) == "built"
    assert states.ensure(llm, second) == "built"  # on top of `first`: only its own tail is read
    llm.reset()
    assert states.restore_longest(llm, second + question) == len(second)
    assert greedy(llm, second + question) == cold

    again = PrefixStates(tmp_path, IDENTITY)  # after a restart the files are found, nothing is read
    assert again.ensure(llm, second) == "loaded"


# ---- a file that cannot be trusted is built again, never used ----

def stored(llm, tmp_path: Path, identity: dict[str, object] = IDENTITY) -> tuple[list[int], Path]:  # type: ignore[no-untyped-def]
    """A prefix stored by a first PrefixStates: its tokens and its file."""
    prefix = llm.tokenize(b"You are the assistant of a museum kiosk. Answer briefly.")
    states = PrefixStates(tmp_path, identity)
    assert states.ensure(llm, prefix) == "built"
    return prefix, tmp_path / (states.key(prefix) + SUFFIX)


def rebuilt_then_loaded(llm, tmp_path: Path, prefix: list[int]) -> None:  # type: ignore[no-untyped-def]
    """After a restart the damaged file is read as missing and written again; the restart after that loads it."""
    assert PrefixStates(tmp_path, IDENTITY).ensure(llm, prefix) == "built"
    assert PrefixStates(tmp_path, IDENTITY).ensure(llm, prefix) == "loaded"


def test_a_file_made_for_another_model_is_rebuilt(llm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = {"model": "another model", "n_ctx": 512}
    prefix, theirs = stored(llm, tmp_path / "other", other)
    ours = tmp_path / (PrefixStates(tmp_path, IDENTITY).key(prefix) + SUFFIX)
    shutil.copyfile(theirs, ours)  # the right name, another set-up's header: the header decides
    rebuilt_then_loaded(llm, tmp_path, prefix)
    header = json.loads(ours.read_bytes().split(b"\n")[1])
    assert header["identity"] == IDENTITY


@pytest.mark.parametrize("where", ["in the state", "in the tokens", "in the header"])
def test_a_truncated_file_is_rebuilt(llm, tmp_path: Path, where: str) -> None:  # type: ignore[no-untyped-def]
    prefix, path = stored(llm, tmp_path)
    data = path.read_bytes()
    body = data.index(b"\n", len(MAGIC)) + 1  # the token ids start here, the state after them
    cut = {"in the state": (body + 4 * len(prefix) + len(data)) // 2, "in the tokens": body + 2 * len(prefix),
           "in the header": len(MAGIC) + 10}[where]
    path.write_bytes(data[:cut])
    rebuilt_then_loaded(llm, tmp_path, prefix)
    assert path.stat().st_size == len(data)  # written again in full


@pytest.mark.parametrize("damage", ["state byte", "token id", "magic", "header field", "header not json"])
def test_a_corrupt_file_is_rebuilt(llm, tmp_path: Path, damage: str) -> None:  # type: ignore[no-untyped-def]
    prefix, path = stored(llm, tmp_path)
    data = bytearray(path.read_bytes())
    body = data.index(b"\n", len(MAGIC)) + 1
    if damage == "state byte":
        data[-100] ^= 0x01
    elif damage == "token id":
        data[body + 4] ^= 0x01
    elif damage == "magic":
        data[0:1] = b"X"
    elif damage == "header field":  # still JSON, a field renamed
        data[len(MAGIC):body] = data[len(MAGIC):body].replace(b'"sha256"', b'"sha257"')
    else:
        data[len(MAGIC):len(MAGIC) + 1] = b"]"
    path.write_bytes(bytes(data))
    rebuilt_then_loaded(llm, tmp_path, prefix)


def test_a_state_llama_refuses_is_dropped_and_the_prompt_read(llm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prefix, path = stored(llm, tmp_path)
    question = prefix + llm.tokenize(b" What is on show today?", add_bos=False)
    llm.reset()
    cold = greedy(llm, question)
    states = PrefixStates(tmp_path, IDENTITY)
    states._write(path, tuple(prefix), b"\x00" * 64)  # a sound file (checksum right) of a state llama.cpp refuses
    assert states.ensure(llm, prefix) == "loaded"
    llm.reset()
    assert states.restore_longest(llm, question) == 0
    assert not path.exists() and states.restored == 0
    assert greedy(llm, question) == cold  # read from the prompt instead


def test_forgetting_removes_other_prefixes_and_cut_short_writes(llm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prefix, path = stored(llm, tmp_path)
    other = llm.tokenize(b"You are the assistant of a zoo kiosk.")
    states = PrefixStates(tmp_path, IDENTITY)
    assert states.ensure(llm, other) == "built"
    leftover = tmp_path / (states.key(other) + SUFFIX + ".tmp")
    leftover.write_bytes(b"a write a power cut stopped")
    states.forget_all_but([prefix])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
