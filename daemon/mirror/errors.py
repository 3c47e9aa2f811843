"""The one error of the mirror commands: what went wrong, in words an operator can act on."""

from __future__ import annotations


class MirrorError(RuntimeError):
    """The mirror cannot be built or verified; the message says why and what to do."""
