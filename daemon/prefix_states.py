"""Model states of prompt prefixes kept on disk, so a text the model has read once is never read again.

A prefix is the tokens every prompt with a given system message starts with (the system prompt with a venue
section, or the plain system prompt). Its state (llama.cpp's KV cache after reading it) is written once to
STATE_DIR/prefixes/, keyed by the model's sha256, n_ctx, flash attention, llama.cpp's version and the tokens
themselves (so the text, the template and the tokenizer are all in the key). Before a question the engine
restores the longest stored prefix its prompt starts with; only the rest is evaluated. A file that is stale
(another model or set-up), truncated or corrupt is detected by its header and checksum and built again.
Only the engine's model thread calls into this class (and so imports llama_cpp, through daemon.llama_adapter).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)

MAGIC = b"KIOSKD-PREFIX-1\n"
SUFFIX = ".kvstate"


class PrefixStates:
    def __init__(self, directory: Path, identity: dict[str, Any]) -> None:
        self._dir = directory
        self._identity = identity
        self._known: dict[tuple[int, ...], Path] = {}
        self.restored = 0
        """Prefixes restored into a question's context since start (for tests and the log)."""

    def key(self, tokens: Sequence[int]) -> str:
        digest = hashlib.sha256(json.dumps(self._identity, sort_keys=True).encode())
        digest.update(struct.pack(f"<{len(tokens)}i", *tokens))
        return digest.hexdigest()[:40]

    def ensure(self, llm: Any, tokens: Sequence[int]) -> str:
        """Make the prefix available: 'loaded' from a valid file, else 'built' (the model reads it now)."""
        prefix = tuple(tokens)
        path = self._dir / (self.key(prefix) + SUFFIX)
        if prefix in self._known or self._read(path, prefix) is not None:
            self._known[prefix] = path
            return "loaded"
        from daemon.llama_adapter import state_bytes

        # Prefixes warmed one after another share their start (the system prompt and the grounding rules):
        # what the live context already holds of it is kept, only the rest is read.
        kept = min(common_prefix(llm.input_ids[: llm.n_tokens], prefix), len(prefix) - 1)
        llm.n_tokens = max(kept, 0)
        llm.eval(list(prefix[llm.n_tokens:]))
        self._write(path, prefix, state_bytes(llm))
        self._known[prefix] = path
        return "built"

    def forget_all_but(self, keep: Sequence[Sequence[int]]) -> None:
        """Stop offering prefixes that are no longer wanted (the venue text changed) and delete their files."""
        wanted = {tuple(t) for t in keep}
        for prefix in [p for p in self._known if p not in wanted]:
            self._known.pop(prefix)
        keys = {self.key(p) + SUFFIX for p in wanted}
        for path in self._dir.glob("*" + SUFFIX):
            if path.name not in keys:
                path.unlink(missing_ok=True)
        # A write cut short (a power cut before its rename) leaves a .tmp the size of a state: nothing reads it.
        for path in self._dir.glob("*" + SUFFIX + ".tmp"):
            path.unlink(missing_ok=True)

    def restore_longest(self, llm: Any, prompt: Sequence[int]) -> int:
        """Restore the longest stored prefix of `prompt` that reaches further than the live context already
        does; the number of tokens restored (0: none)."""
        live = common_prefix(llm.input_ids[: llm.n_tokens], prompt)
        best = max((p for p in self._known if live < len(p) < len(prompt) and tuple(prompt[: len(p)]) == p),
                   key=len, default=None)
        if best is None:
            return 0
        from daemon.llama_adapter import set_state

        path = self._known[best]
        data = self._read(path, best)
        if data is None or not set_state(llm, data):
            _LOGGER.warning("prefix state %s is unusable; it is read again from the prompt", path.name)
            self._known.pop(best, None)
            path.unlink(missing_ok=True)
            llm.reset()
            return 0
        llm.input_ids[: len(best)] = best
        llm.n_tokens = len(best)
        self.restored += 1
        return len(best)

    def _write(self, path: Path, prefix: tuple[int, ...], payload: bytes) -> None:
        header = {"identity": self._identity, "tokens": len(prefix),
                  "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n")
            fh.write(struct.pack(f"<{len(prefix)}i", *prefix))
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _read(self, path: Path, prefix: tuple[int, ...]) -> bytes | None:
        """The state stored for `prefix`, or None when the file is missing, stale or damaged."""
        try:
            with path.open("rb") as fh:
                if fh.readline() != MAGIC:
                    raise ValueError("not a prefix state file")
                header = json.loads(fh.readline())
                if header["identity"] != self._identity or header["tokens"] != len(prefix):
                    raise ValueError("made for another model or set-up")
                stored = fh.read(4 * len(prefix))
                payload = fh.read()
            # Inside the try: a damaged header may still be JSON but lack a field (a KeyError, not a crash).
            damaged = stored != struct.pack(f"<{len(prefix)}i", *prefix) or len(payload) != header["bytes"] \
                or hashlib.sha256(payload).hexdigest() != header["sha256"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _LOGGER.warning("prefix state %s: %s; building it again", path.name, exc)
            return None
        if damaged:
            _LOGGER.warning("prefix state %s is damaged (checksum); building it again", path.name)
            return None
        return payload


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens two sequences share from the start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def model_identity(model_path: Path, n_ctx: int, flash_attn: bool, cache_dir: Path) -> dict[str, Any]:
    """What a stored state is only valid for. The model's sha256 comes from its pull record, else it is
    computed once and remembered by file size and modification time."""
    import llama_cpp

    return {"model_sha256": model_sha256(model_path, cache_dir), "n_ctx": n_ctx, "flash_attn": flash_attn,
            "llama_cpp": str(getattr(llama_cpp, "__version__", "?"))}


def model_sha256(model_path: Path, cache_dir: Path) -> str:
    """The model file's sha256: its pull record's, else a memo in `cache_dir` (by size and mtime), else read."""
    from daemon.models.download import sha256_file
    from daemon.models.pull import manifest_path

    try:
        record = json.loads(manifest_path(model_path).read_text(encoding="utf-8"))
        if isinstance(record, dict) and isinstance(record.get("sha256"), str):
            return str(record["sha256"])
    except (OSError, ValueError):
        pass
    stat = model_path.stat()
    memo = cache_dir / "model-sha256.json"
    stamp = {"path": str(model_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
        if isinstance(known, dict) and known.get("stamp") == stamp:
            return str(known["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    sha = sha256_file(model_path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"stamp": stamp, "sha256": sha}), encoding="utf-8")
    return sha
