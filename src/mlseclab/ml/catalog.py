"""Models mlseclab knows how to produce offline, by name (``builtin:<name>`` in a spec).

The one place the built-in models' pins (file name and sha256) and the refused
pickle suffixes are written: :mod:`mlseclab.ml.models` builds its recipes from them,
validation and the inventory read them here. Kept apart from :mod:`mlseclab.ml.models`
so that validating a spec needs only the names and pins, not the model tooling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

BUILTIN_PREFIX = "builtin:"
FILE_PREFIX = "file:"

#: Formats that deserialise with pickle (arbitrary code execution on load): refused by
#: validation, by the model tooling, by the inference role (``mlseclab_pickle_suffixes``
#: in the inventory) and by the posture checks.
PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass(frozen=True)
class Pin:
    """What a built-in model produces: its file name in the dataset and that file's sha256."""

    file: str
    sha256: str


#: built-in model name -> its pin
BUILTIN: dict[str, Pin] = {
    "gemma-3-270m": Pin(
        file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    "all-minilm-l6-v2": Pin(
        file="all-MiniLM-L6-v2-f16.gguf",
        sha256="8965e38d1d0f59d5f5f49dfa54efd76060bab80149844361d21935302ecef37e",
    ),
}

#: built-in model name -> sha256 of the file it produces
BUILTIN_SHA256: dict[str, str] = {name: pin.sha256 for name, pin in BUILTIN.items()}

#: built-in model name -> the file name it is stored under in its dataset
BUILTIN_FILES: dict[str, str] = {name: pin.file for name, pin in BUILTIN.items()}


def model_file(source: str) -> str:
    """The file name a spec model's ``source`` is stored under in its dataset.

    ``builtin:<name>`` -> the built-in's pinned file name; ``file:/path/x.gguf`` -> ``x.gguf``.
    """
    if source.startswith(BUILTIN_PREFIX):
        return BUILTIN[source.removeprefix(BUILTIN_PREFIX)].file
    return PurePosixPath(source.removeprefix(FILE_PREFIX)).name
