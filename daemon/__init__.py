"""kioskd daemon: hosts the chat model and serves the kiosk over HTTP and WebSocket."""

__version__ = "0.1.0"
