"""The README's configuration table is Settings, written out: every field has its row, with its default."""

import re
from pathlib import Path

from service.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| (`JEPA_[A-Z_]+`(?:, `JEPA_[A-Z_]+`)*) \| ([^|]+) \|", re.M)


def documented() -> dict[str, str]:
    """Each documented variable and its default as the table writes it."""
    rows = {}
    for names, defaults in ROW.findall(README.read_text()):
        keys = [n.strip("` ").removeprefix("JEPA_").lower() for n in names.split(",")]
        values = [d.strip().strip("`") for d in defaults.split(",")] if len(keys) > 1 else [defaults.strip()]
        rows |= dict(zip(keys, values, strict=True))
    return rows


def says(row: str, default: object) -> bool:
    """Whether the table's default is the field's: booleans as the 1/0 the environment takes,
    nothing as unset, numbers by value."""
    row = row.strip("`")
    if default is None:
        return row == "unset"
    if isinstance(default, bool):
        return row == str(int(default))
    if isinstance(default, int | float):
        return float(row) == default
    return row == str(default)


def test_every_setting_has_a_row_and_every_row_a_setting() -> None:
    assert sorted(documented()) == sorted(Settings.model_fields)


def test_each_row_gives_the_settings_default() -> None:
    rows = documented()
    free_text = {"database_url", "data_dir"}  # "SQLite file in the data dir"; `./data` for Path("data")
    wrong = {
        name: (rows[name], field.default)
        for name, field in Settings.model_fields.items()
        if name not in free_text and not says(rows[name], field.default)
    }
    assert wrong == {}
    assert Path(rows["data_dir"].strip("`")) == Settings.model_fields["data_dir"].default
