"""The kiosk page, built from this folder's Vue sources into `dist/` and shipped inside the kioskd package."""

from pathlib import Path

DIST = Path(__file__).resolve().parent / "dist"
"""The built page: index.html and hashed assets (made by `npm run build`; see scripts/setup.sh)."""
