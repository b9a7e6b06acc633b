"""Models mlseclab knows how to produce offline, by name (``builtin:<name>`` in a spec).

Kept apart from :mod:`mlseclab.models` so that validating a spec needs only the
names and pins, not the model tooling.
"""

from __future__ import annotations

#: built-in model name -> sha256 of the file it produces
BUILTIN_SHA256: dict[str, str] = {
    "gemma-3-270m": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    "all-minilm-l6-v2": "8965e38d1d0f59d5f5f49dfa54efd76060bab80149844361d21935302ecef37e",
}

#: built-in model name -> the file name it is stored under in its dataset
BUILTIN_FILES: dict[str, str] = {
    "gemma-3-270m": "gemma-3-270m-q4_k_m.gguf",
    "all-minilm-l6-v2": "all-MiniLM-L6-v2-f16.gguf",
}
