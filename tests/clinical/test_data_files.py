"""The clinical knowledge files read with libyaml's parser give exactly what PyYAML's own safe loader gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dashboard.clinical.data_files import read_yaml

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.parametrize("path", sorted(DATA.rglob("*.yaml")), ids=lambda path: str(path.relative_to(DATA)))
def test_every_data_file_reads_as_the_pure_python_safe_loader_reads_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert repr(read_yaml(text)) == repr(yaml.safe_load(text))  # repr: the same values, types and key order


def test_a_python_object_tag_is_refused_as_safe_loading_refuses_it() -> None:
    with pytest.raises(yaml.constructor.ConstructorError):
        read_yaml("!!python/object/apply:os.system ['true']")
