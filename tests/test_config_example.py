"""config.example.toml is the operator's reference: it must name every key and load as-is."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from gateway.config import Config, load_config

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text("utf-8")
    for section in dataclasses.fields(Config):
        header = re.search(rf"^\[{section.name}\]$", text, re.MULTILINE)
        assert header, section.name
        body = text[header.end() :].split("\n[", 1)[0]
        for key in dataclasses.fields(section.default_factory):  # type: ignore[misc]
            # Secrets are documented commented out, so an example file never carries one.
            assert re.search(rf"^#? ?{key.name} = ", body, re.MULTILINE), f"{section.name}.{key.name}"


def test_example_values_are_the_defaults() -> None:
    assert load_config(EXAMPLE, env={}) == load_config(env={})
