"""kioskd daemon: hosts the chat model and serves the kiosk over HTTP and WebSocket."""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml is the one place the version is written; the installed distribution carries it.
    __version__ = version("kioskd")
except PackageNotFoundError:  # Run from a source tree that was never installed.
    __version__ = "0+unknown"
