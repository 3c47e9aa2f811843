"""kioskd voice path: speech recognition, speech synthesis and sentence chunking (see issue 5)."""
