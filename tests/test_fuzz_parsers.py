"""Property-based tests of the parsers that read untrusted input: WebSocket frames, OpenAI request bodies and the
settings (TOML file, environment, flags). Each may refuse its input only with its own error type; nothing else
may escape. The number of cases tried goes to test-artifacts/fuzz-counts.json (docs/reliability.md reports it).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.frames import CancelFrame, ChatFrame, ClientFrame, FrameError, ListenFrame, SpeechFrame, parse_client_frame
from daemon.openai_compat.schema import ROLES, ApiError, decode_json, parse_chat_request
from daemon.settings import FIELDS, Settings, SettingsError, env_name, load_settings

ROOT = Path(__file__).resolve().parent.parent
COUNTS_FILE = ROOT / "test-artifacts" / "fuzz-counts.json"
COUNTS: Counter[str] = Counter()
ACCEPTED: Counter[str] = Counter()
"""Of the cases in COUNTS, how many the parser accepted: a fuzzer that never gets past the first check is useless."""
# No example database: the checkout is shared, and every run should explore afresh within a fixed budget.
FUZZ = settings(database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCALE = float(os.environ.get("KIOSKD_FUZZ_SCALE", "1"))  # e.g. 10 for a long soak; the default keeps to ~20 s.
SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])


def scaled(examples: int) -> int:
    return max(1, round(examples * SCALE))


def record_counts(section: str, counts: dict[str, int], crashes: int, **details: dict[str, int]) -> None:
    """Merge `counts` (cases tried) under `section` into the shared artifacts file (the parser and HTTP fuzzers
    both write); `crashes` is the number of tests of the section that failed; `details` are further tallies."""
    COUNTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(COUNTS_FILE.read_text())
    except (OSError, ValueError):
        data = {}
    data[section] = {"cases": counts, **details, "total": sum(counts.values()), "failed_tests": crashes}
    COUNTS_FILE.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module", autouse=True)
def counts_file(request: pytest.FixtureRequest) -> Iterator[None]:
    failed = request.session.testsfailed
    yield
    record_counts("parsers", dict(COUNTS), crashes=request.session.testsfailed - failed, accepted=dict(ACCEPTED))


def texts(max_size: int = 30) -> st.SearchStrategy[str]:
    """Any text, now and then with a lone surrogate (Hypothesis leaves them out, but "\\ud800" in JSON makes
    them); rarely, so that the text around is still mostly valid."""
    return st.builds(_with_surrogate, st.text(max_size=max_size), st.integers(0, 15), SURROGATES,
                     st.integers(0, max_size))


def _with_surrogate(text: str, dice: int, surrogate: str, at: int) -> str:
    return text[:at] + surrogate + text[at:] if dice == 7 else text


SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts()
# Small on purpose: generating big nested values is what makes property tests slow, and the parsers look at most
# two levels deep.
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts(8), inner,
                                                                                                 max_size=4),
                           max_leaves=8)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if _encodable(value) else json.dumps(value)


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---- WebSocket client frames ----

QUESTION_LIMITS = st.none() | st.integers(1, 50)


def check_frame(raw: str, limit: int | None) -> ClientFrame | None:
    try:
        frame = parse_client_frame(raw, limit)
    except FrameError as exc:
        assert exc.code in ("bad_json", "bad_frame", "unknown_type", "question_too_long"), exc.code
        return None
    if isinstance(frame, ChatFrame):  # What the parser lets through is what the rest of the daemon relies on.
        assert frame.text.strip() and (limit is None or len(frame.text) <= limit)
        frame.text.encode("utf-8")
        assert frame.session is None or 0 < len(frame.session) <= 64
    return frame


@settings(FUZZ, max_examples=scaled(600))
@given(raw=texts(200), limit=QUESTION_LIMITS)
def test_any_text_as_a_frame_raises_only_frame_error(raw: str, limit: int | None) -> None:
    COUNTS["frames: arbitrary text"] += 1
    check_frame(raw, limit)


@settings(FUZZ, max_examples=scaled(600))
@given(value=JSON_VALUES, limit=QUESTION_LIMITS)
def test_any_json_as_a_frame_raises_only_frame_error(value: Any, limit: int | None) -> None:
    COUNTS["frames: arbitrary JSON"] += 1
    check_frame(dumps(value), limit)


def loose(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly plausible values, sometimes anything: the deeper checks are only reached by nearly valid input."""
    # Hypothesis picks one_of's branches evenly; drawing both and choosing by a die gives the mix wanted.
    return st.builds(lambda die, good, bad: bad if die == 7 else good, st.integers(0, 9), valid, SCALARS)


FRAME_FIELDS = {
    "text": loose(texts(60)),
    "session": loose(st.none() | texts(70)),
    "on": loose(st.booleans()),
}
FRAME_TYPES = loose(st.sampled_from(["chat", "chat", "cancel", "listen", "speech", "CHAT", "", "token"]))


@settings(FUZZ, max_examples=scaled(800))
@given(kind=FRAME_TYPES, frame=st.fixed_dictionaries({}, optional=FRAME_FIELDS),
       extra=st.dictionaries(texts(8), SCALARS, max_size=2), limit=QUESTION_LIMITS)
def test_frame_shaped_json_raises_only_frame_error(kind: Any, frame: dict[str, Any], extra: dict[str, Any],
                                                   limit: int | None) -> None:
    COUNTS["frames: frame-shaped JSON"] += 1
    if check_frame(dumps({**extra, **frame, "type": kind}), limit) is not None:
        ACCEPTED["frames: frame-shaped JSON"] += 1


VALID_FRAMES = st.one_of(
    st.builds(ChatFrame, text=st.text(min_size=1).filter(str.strip),
              session=st.none() | st.text(min_size=1, max_size=64)),
    st.just(CancelFrame()),
    st.builds(ListenFrame, on=st.booleans()),
    st.builds(SpeechFrame, on=st.booleans()),
)


@settings(FUZZ, max_examples=scaled(300))
@given(frame=VALID_FRAMES, ascii_only=st.booleans())
def test_valid_frames_round_trip(frame: ClientFrame, ascii_only: bool) -> None:
    COUNTS["frames: valid round trip"] += 1
    fields = {k: v for k, v in vars(frame).items() if not (k == "session" and v is None)}
    raw = json.dumps({"type": frame.type, **fields}, ensure_ascii=ascii_only)
    assert parse_client_frame(raw) == frame


# ---- OpenAI chat-completion bodies ----

CHAT_SETTINGS = load_settings({"state_dir": tempfile.gettempdir(), "voice": False, "max_tokens": 300}, environ={})


def check_chat(body: Any) -> bool:
    """Whether the body was accepted; a refusal must be an ApiError 400."""
    try:
        params = parse_chat_request(body, CHAT_SETTINGS)
    except ApiError as exc:
        assert exc.status == 400 and exc.kind == "invalid_request_error", exc.body()
        return False
    # Accepted: the invariants the engine relies on.
    assert params.messages[0].role == "system" and params.messages[-1].role == "user"
    assert all(m.role in ROLES.values() for m in params.messages)
    s = params.sampling
    assert 1 <= s.max_tokens <= CHAT_SETTINGS.max_tokens
    assert 0 <= s.temperature <= 2 and 0 <= s.top_p <= 1 and 0 <= s.top_k < 2**31
    assert math.isfinite(s.temperature) and len(s.stop) <= 4
    assert s.seed is None or -(2**63) <= s.seed < 2**63
    return True


@settings(FUZZ, max_examples=scaled(600))
@given(body=JSON_VALUES)
def test_any_json_as_a_chat_request_raises_only_api_error(body: Any) -> None:
    COUNTS["openai: arbitrary JSON"] += 1
    check_chat(body)


CONTENT = loose(texts(10) | st.lists(st.fixed_dictionaries({"type": loose(st.just("text")),
                                                             "text": loose(texts(10))}), max_size=2))
MESSAGE_EXTRAS = {"name": loose(st.text(max_size=5)), "refusal": loose(st.none()), "extra": SCALARS}
MESSAGE = st.fixed_dictionaries({"role": loose(st.sampled_from([*ROLES, "tool"])), "content": CONTENT},
                                optional=MESSAGE_EXTRAS)
# Most requests end with a user message, as valid ones must, so that the sampling checks get exercised too.
LAST_MESSAGE = st.fixed_dictionaries({"role": loose(st.just("user")), "content": CONTENT})
MESSAGES = loose(st.builds(lambda head, last: [*head, last], st.lists(MESSAGE, max_size=3), LAST_MESSAGE))
CHAT_FIELDS = {
    "model": loose(st.text(max_size=10)),
    "max_tokens": loose(st.integers(-1, 4200)),
    "max_completion_tokens": loose(st.integers(-1, 4200) | st.integers()),
    "temperature": loose(st.floats(-0.1, 2.1)),
    "top_p": loose(st.floats(-0.05, 1.05)),
    "top_k": loose(st.integers(-1, 100) | st.integers(2**31 - 2, 2**31)),
    "seed": loose(st.integers(-(2**64), 2**64)),
    "stop": loose(texts(5) | st.lists(texts(5), max_size=5)),
    "n": loose(st.just(1) | st.integers(0, 2)),
    "stream": loose(st.booleans()),
    "stream_options": loose(st.fixed_dictionaries({}, optional={"include_usage": loose(st.booleans())})),
    "tools": SCALARS,
}


@settings(FUZZ, max_examples=scaled(2000))
@given(messages=MESSAGES, fields=st.fixed_dictionaries({}, optional=CHAT_FIELDS))
def test_chat_shaped_requests_raise_only_api_error(messages: Any, fields: dict[str, Any]) -> None:
    COUNTS["openai: request-shaped JSON"] += 1
    if check_chat({"messages": messages, **fields}):
        ACCEPTED["openai: request-shaped JSON"] += 1


@settings(FUZZ, max_examples=scaled(600))
@given(raw=st.binary(max_size=200) | texts(200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_as_a_body_decode_or_raise_bad_json(raw: bytes) -> None:
    COUNTS["openai: body bytes"] += 1
    try:
        value = decode_json(raw)
    except ApiError as exc:
        assert (exc.status, exc.code) == (400, "bad_json")
        return
    json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")  # Clean, re-encodable JSON.


# ---- settings ----

SETTING_SCALARS = (st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | texts()
                   | st.integers(-5, 100_000).map(str) | st.sampled_from(["true", "off", "1e3", "nan", " 8 ", "~"]))


SETTING_DICTS = st.dictionaries(st.sampled_from(sorted(FIELDS)), SETTING_SCALARS | st.lists(SETTING_SCALARS,
                                                                                            max_size=3),
                                max_size=6)


def check_settings(section: str, **kwargs: Any) -> None:
    COUNTS[section] += 1
    try:
        settings_ = load_settings(**kwargs)
    except SettingsError as exc:
        assert str(exc)
        return
    assert isinstance(settings_, Settings)
    ACCEPTED[section] += 1


@settings(FUZZ, max_examples=scaled(600))
@given(values=SETTING_DICTS)
def test_settings_from_flags_raise_only_settings_error(values: dict[str, Any]) -> None:
    check_settings("settings: flags", cli={"state_dir": "/nonexistent/state", **values}, environ={})


@settings(FUZZ, max_examples=scaled(500))
@given(values=SETTING_DICTS)
def test_settings_from_the_environment_raise_only_settings_error(values: dict[str, Any]) -> None:
    environ = {env_name(k): v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    check_settings("settings: environment", environ=environ)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    # A JSON string is a TOML basic string, except that TOML wants DEL escaped and no surrogate escapes.
    # A lone surrogate becomes the escape "\\udXXX", which TOML must refuse (it is not a Unicode scalar value).
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f").encode("utf-8", "backslashreplace").decode()


@settings(FUZZ, max_examples=scaled(300))
@given(values=SETTING_DICTS, table=st.booleans(), garbage=st.none() | st.text(max_size=40))
def test_settings_from_a_toml_file_raise_only_settings_error(values: dict[str, Any], table: bool,
                                                             garbage: str | None) -> None:
    lines = ["[kioskd]"] if table else []
    lines += [f"{name} = {toml_value(value)}" for name, value in values.items()]
    # Arbitrary text spliced in: mostly syntax errors, sometimes more settings. (Files that are not UTF-8 are
    # covered by test_settings_crashes_found_by_fuzzing.)
    if garbage is not None:
        lines.insert(len(lines) // 2, garbage)
    with tempfile.TemporaryDirectory(prefix="kioskd-fuzz-") as tmp:
        path = Path(tmp, "config.toml")
        path.write_text("\n".join(lines), encoding="utf-8")
        check_settings("settings: TOML file", config=path, environ={})


FOUND_CRASHES = [
    pytest.param({"cli": {"model": "~nosuchuser/model.gguf"}}, id="path with an unknown ~user: RuntimeError"),
    pytest.param({"toml": b"port = " + b"[" * 5000}, id="deeply nested TOML: RecursionError"),
    pytest.param({"toml": b"port = 1\n# \xff\n"}, id="config file not UTF-8: UnicodeDecodeError"),
]


@pytest.mark.parametrize("case", FOUND_CRASHES)
def test_settings_crashes_found_by_fuzzing(case: dict[str, Any], tmp_path: Path) -> None:
    """Each of these once raised something other than SettingsError (the exception named in its id)."""
    if "toml" in case:
        path = tmp_path / "config.toml"
        path.write_bytes(case["toml"])
        with pytest.raises(SettingsError):
            load_settings(config=path, environ={})
    else:
        with pytest.raises(SettingsError):
            load_settings({"state_dir": str(tmp_path), **case["cli"]}, environ={})
