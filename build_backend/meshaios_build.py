"""The build backend: setuptools' own, asking for mypy at build time only when MESHAIOS_COMPILE=1 (setup.py then
compiles meshaios/native.py's MODULES with mypyc; by default meshaios builds as pure Python and needs no mypy, no C
compiler). setuptools documents this pattern: an in-tree backend wrapping ``setuptools.build_meta`` for dynamic
build requirements."""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every hook of setuptools' backend, unchanged)


def _compile() -> list[str]:
    return ["mypy>=1.11"] if os.environ.get("MESHAIOS_COMPILE", "") not in ("", "0") else []


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return list(_setuptools.get_requires_for_build_wheel(config_settings)) + _compile()


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return list(_setuptools.get_requires_for_build_editable(config_settings)) + _compile()
