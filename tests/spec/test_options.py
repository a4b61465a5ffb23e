"""One table of options: Space, NetConfig and the docs are the table's, and cannot drift from it."""

from __future__ import annotations

import dataclasses

import pytest

from sweeps import SweepsError
from sweeps.engine.config import NetConfig
from sweeps.spec.options import OPTIONS, PARAMS, REQUIRED, fallbacks, table_markdown
from sweeps.spec.space import Space, as_param, check_config


def test_space_has_one_field_per_option_with_the_option_s_default():
    assert tuple(f.name for f in dataclasses.fields(Space)) == PARAMS
    space = Space()
    for name, option in OPTIONS.items():
        assert getattr(space, name) == as_param(name, option.default), name


def test_netconfig_takes_every_option_and_falls_back_as_the_table_says():
    option_fields = {f.name: f for f in dataclasses.fields(NetConfig) if f.name in OPTIONS}
    assert set(option_fields) == set(OPTIONS)
    assert set(f.name for f in dataclasses.fields(NetConfig)) - set(OPTIONS) == {"balanced_validation",
                                                                                 "worst_group"}
    for name, field in option_fields.items():
        fallback = OPTIONS[name].fallback
        if fallback is REQUIRED:
            assert field.default is dataclasses.MISSING, name
        else:
            assert field.default == fallback, name
    assert NetConfig(1, 8, 0.0, 0.0, 1e-3) == NetConfig(**{"depth": 1, "width": 8, "dropout": 0.0,
                                                           "weight_decay": 0.0, "lr": 1e-3, **fallbacks()})


def test_an_option_s_valid_values_are_checked_from_its_row():
    for name, option in OPTIONS.items():
        if option.kind == "choice":
            with pytest.raises(SweepsError, match=rf"Space.{name}: choices are"):
                Space(**{name: "nonsense"})
        elif option.valid[1] != float("inf"):
            with pytest.raises(SweepsError, match=rf"Space.{name}: .* must hold"):
                Space(**{name: option.valid[1] + 1})
    with pytest.raises(SweepsError, match=r"missing parameter\(s\) \['depth', 'dropout', 'lr', 'weight_decay'"):
        check_config({"width": 8})


def test_the_options_page_lists_every_option():
    page = table_markdown()
    for name in OPTIONS:
        assert f"| `{name}` |" in page
