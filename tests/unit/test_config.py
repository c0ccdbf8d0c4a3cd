"""Node settings: config file < environment < command line, with types checked on the way in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from meshaios.config import DEFAULT_PORT, NodeConfig, load_node_config, state_dir
from meshaios.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting from the developer's environment or ~/.config leaks into a test."""
    for var in list(os.environ):
        if var.startswith("MESHAIOS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def write(tmp_path: Path, text: str, name: str = "node.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_without_file_env_or_cli() -> None:
    cfg = load_node_config({})
    assert cfg == NodeConfig()
    assert cfg.port == DEFAULT_PORT
    assert cfg.insecure is False


def test_precedence_file_then_env_then_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path, '[node]\nport = 1000\nname = "from-file"\nworkers = 3\n')
    assert load_node_config({}, f).port == 1000
    monkeypatch.setenv("MESHAIOS_PORT", "2000")
    monkeypatch.setenv("MESHAIOS_NAME", "from-env")
    cfg = load_node_config({}, f)
    assert (cfg.port, cfg.name, cfg.workers) == (2000, "from-env", 3)
    cfg = load_node_config({"port": 3000, "name": None, "workers": None}, f)
    assert (cfg.port, cfg.name, cfg.workers) == (3000, "from-env", 3)


def test_cli_none_and_empty_lists_do_not_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path, '[node]\njoin = ["a:1", "b:2"]\n')
    monkeypatch.setenv("MESHAIOS_ALLOWED_MODULES", "math,numpy")
    cfg = load_node_config({"join": (), "allowed_modules": [], "bind": None, "insecure": None}, f)
    assert cfg.join == ("a:1", "b:2")
    assert cfg.allowed_modules == ("math", "numpy")
    assert load_node_config({"join": ("c:3",)}, f).join == ("c:3",)


def test_cli_false_overrides_a_true_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHAIOS_DISCOVERY", "yes")
    assert load_node_config({"discovery": False}).discovery is False


def test_unknown_cli_keys_are_ignored() -> None:
    assert load_node_config({"force": True, "print": True}) == NodeConfig()


def test_env_file_and_default_file_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = tmp_path / "xdg" / "meshaios" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text('[node]\nname = "default-file"\n')
    assert load_node_config({}).name == "default-file"
    monkeypatch.setenv("MESHAIOS_CONFIG", write(tmp_path, '[node]\nname = "env-file"\n'))
    assert load_node_config({}).name == "env-file"
    assert load_node_config({}, write(tmp_path, '[node]\nname = "explicit"\n', "x.toml")).name == "explicit"


def test_token_is_not_read_from_the_environment_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHAIOS_TOKEN", "secret-secret-secret")
    cfg = load_node_config({})
    assert cfg.token is None
    assert "secret" not in repr(load_node_config({"token": "secret-secret-secret"}))


# ---------------------------------------------------------------------------------------------- coercion
@pytest.mark.parametrize(
    ("var", "raw", "field", "value"),
    [
        ("MESHAIOS_PORT", " 6000 ", "port", 6000),
        ("MESHAIOS_WORKERS", "0", "workers", 0),
        ("MESHAIOS_INSECURE", "1", "insecure", True),
        ("MESHAIOS_INSECURE", "TRUE", "insecure", True),
        ("MESHAIOS_INSECURE", "on", "insecure", True),
        ("MESHAIOS_INSECURE", "no", "insecure", False),
        ("MESHAIOS_INSECURE", "0", "insecure", False),
        ("MESHAIOS_INSECURE", "", "insecure", False),
        ("MESHAIOS_DISCOVERY", "off", "discovery", False),
        ("MESHAIOS_JOIN", "h1:1, h2:2,,", "join", ("h1:1", "h2:2")),
        ("MESHAIOS_FAKE_GPUS", "speed=8", "fake_gpus", ("speed=8",)),
        ("MESHAIOS_BIND", "10.0.0.1", "bind", "10.0.0.1"),
        ("MESHAIOS_MAX_FRAME_BYTES", "1024", "max_frame_bytes", 1024),
    ],
)
def test_environment_strings_are_coerced(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str, field: str, value: Any
) -> None:
    monkeypatch.setenv(var, raw)
    assert getattr(load_node_config({}), field) == value


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("MESHAIOS_PORT", "http"),
        ("MESHAIOS_PORT", "1.5"),
        ("MESHAIOS_WORKERS", ""),
        ("MESHAIOS_INSECURE", "maybe"),
        ("MESHAIOS_DISCOVERY", "ture"),  # a typo is not silently False
    ],
)
def test_bad_environment_values_are_config_errors(monkeypatch: pytest.MonkeyPatch, var: str, raw: str) -> None:
    monkeypatch.setenv(var, raw)
    with pytest.raises(ConfigError, match=var.removeprefix("MESHAIOS_").lower()):
        load_node_config({})


def test_file_values_are_coerced(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "[node]\n"
        "port = 7000\n"
        "insecure = true\n"
        'discovery = "no"\n'
        'join = ["h:1", 2]\n'
        'allowed-modules = "math, json"\n'
        'log-level = "debug"\n'
        "name = 12\n"
        "workers = 4.0\n",
    )
    cfg = load_node_config({}, f)
    assert cfg.port == 7000
    assert cfg.insecure is True
    assert cfg.discovery is False
    assert cfg.join == ("h:1", "2")
    assert cfg.allowed_modules == ("math", "json")
    assert cfg.log_level == "debug"
    assert cfg.name == "12"
    assert cfg.workers == 4


def test_cli_values_are_coerced() -> None:
    cfg = load_node_config({"port": "8000", "join": ["a:1"], "insecure": True})
    assert cfg.port == 8000
    assert cfg.join == ("a:1",)
    assert cfg.insecure is True


@pytest.mark.parametrize(
    "body",
    [
        "port = true",  # a bool is not an int
        "port = 5577.5",
        'port = "http"',
        "join = 5",
        'insecure = "perhaps"',
        "insecure = 2",
    ],
)
def test_mistyped_file_values_are_config_errors(tmp_path: Path, body: str) -> None:
    with pytest.raises(ConfigError):
        load_node_config({}, write(tmp_path, f"[node]\n{body}\n"))


def test_unknown_key_in_the_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prot"):
        load_node_config({}, write(tmp_path, "[node]\nprot = 1\n"))
    with pytest.raises(ConfigError, match="swim"):
        load_node_config({}, write(tmp_path, "[node]\nswim = 1\n"))


def test_broken_or_missing_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_node_config({}, write(tmp_path, "[node\nport = 1\n"))
    with pytest.raises(ConfigError):
        load_node_config({}, str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="table"):
        load_node_config({}, write(tmp_path, "node = 5\n"))


def test_other_tables_in_the_file_are_left_alone(tmp_path: Path) -> None:
    assert load_node_config({}, write(tmp_path, "[client]\ntimeout = 3\n")) == NodeConfig()


# ---------------------------------------------------------------------------------------------- derived values
def test_bind_address_depends_on_insecure() -> None:
    assert NodeConfig().bind_address == "0.0.0.0"
    assert NodeConfig(insecure=True).bind_address == "127.0.0.1"
    assert NodeConfig(insecure=True, bind="0.0.0.0").bind_address == "0.0.0.0"


def test_worker_count_and_display_name() -> None:
    assert NodeConfig(workers=3).worker_count == 3
    assert NodeConfig().worker_count >= 1
    assert NodeConfig(name="box").display_name == "box"
    assert NodeConfig().display_name


def test_state_dir(tmp_path: Path) -> None:
    assert state_dir() == tmp_path / "state" / "meshaios"
    assert state_dir(NodeConfig(state_dir=str(tmp_path / "s"))) == tmp_path / "s"


def test_wire_limits_and_handshake_come_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshaios.wire.codec import WireLimits

    monkeypatch.setenv("MESHAIOS_HANDSHAKE_IVL", "2.5")
    monkeypatch.setenv("MESHAIOS_MAX_FRAMES", "100")
    cfg = load_node_config({})
    assert cfg.handshake_ivl == 2.5
    assert WireLimits.from_config(cfg).max_frames == 100
    monkeypatch.setenv("MESHAIOS_HANDSHAKE_IVL", "soon")
    with pytest.raises(ConfigError, match="wants a number"):
        load_node_config({})


def test_work_stealing_is_on_by_default_and_each_source_can_turn_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_node_config({}).steal is True
    assert load_node_config({"steal": False}).steal is False  # meshaios node --no-steal
    assert load_node_config({}, write(tmp_path, "[node]\nsteal = false\n")).steal is False
    monkeypatch.setenv("MESHAIOS_STEAL", "off")
    assert load_node_config({}).steal is False
    assert load_node_config({"steal": None}).steal is False  # no --no-steal on the command line: env stands
