from pathlib import Path

import pytest

from tests.factories import add_version
from training.errors import InvalidInput, ModelNotFound, VersionNotFound
from training.store import registry
from training.store.db import SessionFactory


def test_versions_are_numbered_per_model(factory: SessionFactory, tmp_path: Path) -> None:
    with factory.begin() as s:
        numbers = [add_version(s, tmp_path, "a", seed=i).number for i in range(3)]
        other = add_version(s, tmp_path, "b", seed=9).number
    assert numbers == [1, 2, 3] and other == 1


def test_no_version_means_the_production_alias_else_the_latest(factory: SessionFactory, tmp_path: Path) -> None:
    with factory.begin() as s:
        for i in range(3):
            add_version(s, tmp_path, "a", seed=i)
    with factory.begin() as s:
        assert registry.get_version(s, "a", None, "production").number == 3
        registry.set_alias(s, "a", "production", 2)
    with factory() as s:
        assert registry.get_version(s, "a", None, "production").number == 2
        assert registry.get_version(s, "a", "production").number == 2
        assert registry.get_version(s, "a", 1).number == 1
        assert registry.get_version(s, "a", "3").number == 3  # digits are a number, not an alias


def test_aliases_move_and_disappear(factory: SessionFactory, tmp_path: Path) -> None:
    with factory.begin() as s:
        add_version(s, tmp_path, "a", seed=0)
        add_version(s, tmp_path, "a", seed=1)
        registry.set_alias(s, "a", "staging", 1)
        registry.set_alias(s, "a", "staging", 2)
    with factory.begin() as s:
        assert registry.get_version(s, "a", "staging").number == 2
        registry.delete_alias(s, "a", "staging")
    with factory() as s, pytest.raises(VersionNotFound, match="alias 'staging'"):
        registry.get_version(s, "a", "staging")


def test_unknown_names_raise_not_found(factory: SessionFactory, tmp_path: Path) -> None:
    with factory.begin() as s:
        add_version(s, tmp_path, "a")
    with factory() as s:
        with pytest.raises(ModelNotFound):
            registry.get_version(s, "nope", None)
        with pytest.raises(VersionNotFound, match="no version 5"):
            registry.get_version(s, "a", 5)
        with pytest.raises(VersionNotFound):
            registry.get_version(s, "a", "canary")


@pytest.mark.parametrize("ref", [0, -1, True, "1.5", "-2", "has space", ""])
def test_malformed_version_refs_are_invalid(ref: object) -> None:
    with pytest.raises(InvalidInput):
        registry.parse_version_ref(ref)  # type: ignore[arg-type]


def test_list_models_carries_versions_and_aliases(factory: SessionFactory, tmp_path: Path) -> None:
    with factory.begin() as s:
        add_version(s, tmp_path, "b")
        add_version(s, tmp_path, "a")
        registry.set_alias(s, "a", "production", 1)
    with factory() as s:
        models = registry.list_models(s)
        assert [m.name for m in models] == ["a", "b"]
        assert [(a.name, a.version.number) for a in models[0].aliases] == [("production", 1)]
