"""Reading the clinical knowledge files under data/ (YAML).

With libyaml's parser when PyYAML was built with it (the wheels are): the same safe loading as
`yaml.safe_load`, about ten times faster — the imaging rules and reference curves are read at every command's
start (0.19 s → 0.02 s). Without libyaml, PyYAML's pure-Python safe loader.
"""

from __future__ import annotations

from typing import Any

import yaml

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str) -> Any:
    """A YAML document's data, built only of plain values (safe loading: no Python objects)."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 — a safe loader, C or Python
