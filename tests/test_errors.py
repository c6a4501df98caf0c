"""sesemi.errors: a ConfigError is one line naming the key and the fix; ``exit_with`` ends a command with it; the
overrides a fix prints are shell words Hydra reads back as the very strings given."""

from __future__ import annotations

import shlex

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from sesemi.errors import ConfigError, exit_with, hydra_value, list_override, override


def test_a_config_error_is_one_line_with_its_key_and_fix():
    err = ConfigError("data.root", "is missing.\n  (wrapped   over lines)", "give data.root=<folder>")
    assert str(err) == "data.root: is missing. (wrapped over lines). Fix: give data.root=<folder>"
    assert (err.key, err.fix) == ("data.root", "give data.root=<folder>") and isinstance(err, ValueError)


def test_exit_with_prints_the_error_line_and_exits(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as info:
        exit_with(ConfigError("run.devices", "is 3", "set run.devices=1"))
    assert info.value.code == 2
    assert capsys.readouterr().err == "sesemi: error: run.devices: is 3. Fix: set run.devices=1\n"
    with pytest.raises(SystemExit) as info:
        exit_with("interrupted", code=130)
    assert info.value.code == 130 and capsys.readouterr().err == "sesemi: error: interrupted\n"


@pytest.mark.parametrize(
    "value", ["plain", "with space", "a=b", "1.5", "true", "null", 'quote"d', "back\\", "${x}", "/runs/my run/ckpt"]
)
def test_a_printed_override_reads_back_as_the_string_given(value: str):
    (word,) = shlex.split(override("run.resume", value))  # one shell word
    (parsed,) = OverridesParser.create().parse_overrides([word])
    assert parsed.key_or_group == "run.resume"
    assert (
        OmegaConf.create({"v": parsed.value()}).v == value
    )  # as the composed config holds it (\${ is no interpolation)
    assert hydra_value("plain") == "plain" and hydra_value("1.5") == '"1.5"'  # bare only where it stays a string


def test_a_list_override_sets_or_adds_the_key():
    (word,) = shlex.split(list_override("data.classes", ["cat", "my dog", "7"]))
    (parsed,) = OverridesParser.create().parse_overrides([word])
    assert word.startswith("++data.classes=") and parsed.value() == ["cat", "my dog", "7"]
