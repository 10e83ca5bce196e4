"""docs/configuration.md is the one reference table of settings: it names every setting the code
reads, with its environment variable, and nothing the code does not read."""

from __future__ import annotations

import re
from pathlib import Path

from majordomo_gateway.config import env_name, setting_paths

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# A table row: | `section.key` | `MAJORDOMO_...` | default | what it does |
ROW = re.compile(r"^\| `([a-z_<>.]+)` \| `(MAJORDOMO_[A-Z_<>]+)` \|", re.MULTILINE)


def documented() -> dict[str, str]:
    return dict(ROW.findall(DOC.read_text(encoding="utf-8")))


def test_every_setting_is_documented_with_its_variable() -> None:
    rows = documented()
    missing = [path for path in setting_paths() if path not in rows]
    assert not missing, f"add these settings to docs/configuration.md: {missing}"
    for path, variable in rows.items():
        assert variable == env_name(path), f"{path} is set by {env_name(path)}, not {variable}"


def test_no_documented_setting_is_unknown_to_the_code() -> None:
    stale = sorted(set(documented()) - set(setting_paths()))
    assert not stale, f"docs/configuration.md documents settings the code does not read: {stale}"
