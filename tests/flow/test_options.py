"""The environment is read once, at the entry points, into VisitOptions (flows.options)."""

from __future__ import annotations

import pytest

from flows.options import (
    HLA_BASEPATH_ENV_VAR,
    HLA_BUILD_ENV_VAR,
    QUALITY_ENV_VAR,
    read_environment,
)
from hap_models.errors import HapInputError
from hap_models.run_options import VisitOptions


def test_every_variable_becomes_a_field(tmp_path):
    (tmp_path / "hla_classic").mkdir()
    env = {QUALITY_ENV_VAR: " On ", HLA_BASEPATH_ENV_VAR: str(tmp_path / "hla"),
           HLA_BUILD_ENV_VAR: "v3"}
    options = read_environment(VisitOptions(output_dir=tmp_path), env)
    assert options.environment_read and options.quality_enabled
    assert options.hla_classic_basepath == tmp_path / "hla"
    assert options.hla_build_ver == "v3"
    assert options.hla_classic_dir == tmp_path / "hla_classic"
    # read once: a later call (a flow started by an entry point) changes nothing
    assert read_environment(options, {QUALITY_ENV_VAR: "off"}) is options


def test_defaults_without_environment(tmp_path):
    options = read_environment(VisitOptions(output_dir=tmp_path), {})
    assert not options.quality_enabled
    assert options.hla_classic_basepath is None and options.hla_build_ver is None
    assert options.hla_classic_dir is None         # no hla_classic/ folder in the output
    assert read_environment(VisitOptions(output_dir=tmp_path, quality=True), {}).quality_enabled


def test_bad_quality_switch_is_one_line_naming_the_variable(tmp_path):
    with pytest.raises(HapInputError) as raised:
        read_environment(VisitOptions(output_dir=tmp_path), {QUALITY_ENV_VAR: "maybe"})
    message = str(raised.value)
    assert QUALITY_ENV_VAR in message and "maybe" in message and "\n" not in message
