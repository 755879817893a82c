import pytest

from core.env import ImproperlyConfiguredError, env_bool, env_float, env_int, env_list, env_optional, env_str


def test_required_value_fails_with_its_name(monkeypatch):
    monkeypatch.delenv("SOME_REQUIRED", raising=False)
    with pytest.raises(ImproperlyConfiguredError, match="SOME_REQUIRED"):
        env_str("SOME_REQUIRED")
    assert env_str("SOME_REQUIRED", "fallback") == "fallback"


@pytest.mark.parametrize(
    ("raw", "value"), [("1", True), ("true", True), ("YES", True), ("0", False), ("off", False), ("", False)]
)
def test_booleans_parse_strictly(monkeypatch, raw, value):
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG", not value) is value


def test_a_typo_in_a_boolean_is_an_error(monkeypatch):
    monkeypatch.setenv("FLAG", "ture")
    with pytest.raises(ImproperlyConfiguredError, match="FLAG"):
        env_bool("FLAG", False)


def test_numbers_lists_and_optionals(monkeypatch):
    monkeypatch.setenv("N", "12")
    monkeypatch.setenv("F", "0.5")
    monkeypatch.setenv("L", " a, b ,,c ")
    monkeypatch.setenv("EMPTY", "  ")
    assert env_int("N", 1) == 12 and env_float("F", 1.0) == 0.5
    assert env_list("L", []) == ["a", "b", "c"]
    assert env_optional("EMPTY") is None
    monkeypatch.setenv("N", "twelve")
    with pytest.raises(ImproperlyConfiguredError, match="N must be an integer"):
        env_int("N", 1)
    monkeypatch.setenv("N", "-1")
    with pytest.raises(ImproperlyConfiguredError, match=">= 0"):
        env_int("N", 1, minimum=0)
