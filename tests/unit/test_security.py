"""The mesh token, the keys derived from it, and how it is stored and found."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import zmq

from meshaios import security
from meshaios.errors import ConfigError
from meshaios.security import derive_keys, insecure_mesh_id, new_token, read_token, write_token

TOKEN = "correct-horse-battery-staple-0123"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No token from the developer's own environment or home directory leaks into a test."""
    for var in ("MESHAIOS_TOKEN", "MESHAIOS_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------------------- keys
def test_derive_keys_is_deterministic() -> None:
    a, b = derive_keys(TOKEN), derive_keys(TOKEN)
    assert a == b
    assert len(a.public) == 40
    assert len(a.secret) == 40
    assert zmq.curve_public(a.secret) == a.public


def test_surrounding_whitespace_does_not_change_the_keys() -> None:
    assert derive_keys(f"  {TOKEN}\n") == derive_keys(TOKEN)


def test_different_tokens_give_different_keys_and_mesh_ids() -> None:
    a, b = derive_keys(TOKEN), derive_keys(TOKEN + "x")
    assert a.public != b.public
    assert a.secret != b.secret
    assert a.mesh_id != b.mesh_id


def test_mesh_id_reveals_nothing_of_the_token_or_secret() -> None:
    keys = derive_keys(TOKEN)
    assert len(keys.mesh_id) == 16
    int(keys.mesh_id, 16)  # hex
    for secret_part in (TOKEN, TOKEN[:8], keys.secret.decode()[:8]):
        assert secret_part not in keys.mesh_id
    assert TOKEN not in repr(keys)
    assert keys.secret.decode() not in repr(keys)
    assert keys.mesh_id in repr(keys)


@pytest.mark.parametrize("token", ["", "short", "x" * 15, " " * 40, "  fifteen-chars  "])
def test_short_tokens_are_refused(token: str) -> None:
    with pytest.raises(ConfigError, match="too short"):
        derive_keys(token)


def test_sixteen_characters_are_enough() -> None:
    assert derive_keys("x" * 16).mesh_id


def test_new_tokens_are_long_random_and_usable() -> None:
    tokens = {new_token() for _ in range(20)}
    assert len(tokens) == 20
    for t in tokens:
        assert len(t) >= 40
        assert "=" not in t
        derive_keys(t)


def test_insecure_mesh_id_never_looks_like_a_secure_one() -> None:
    assert insecure_mesh_id().startswith("insecure")
    assert insecure_mesh_id("a") != insecure_mesh_id("b")
    assert insecure_mesh_id() != derive_keys(TOKEN).mesh_id


# ---------------------------------------------------------------------------------------------- token file
def test_write_token_creates_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "token"
    write_token(path, TOKEN)
    assert path.read_text() == TOKEN + "\n"
    assert mode(path) == 0o600
    assert mode(path.parent) & 0o077 == 0


def test_write_token_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_token(tmp_path / "token", TOKEN)
    finally:
        os.umask(old)
    assert mode(tmp_path / "token") == 0o600


def test_write_token_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "token"
    write_token(path, TOKEN)
    with pytest.raises(ConfigError, match="exists"):
        write_token(path, "another-token-0123456789")
    assert path.read_text() == TOKEN + "\n"


def test_write_token_overwrites_when_asked_and_tightens_the_mode_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    path.write_text("an old, much longer token that was world readable\n")
    path.chmod(0o644)
    modes_at_write: list[int] = []
    real_fdopen = os.fdopen

    def spying_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        modes_at_write.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", spying_fdopen)
    write_token(path, TOKEN, overwrite=True)
    assert modes_at_write == [0o600]  # never readable by others, not even for an instant
    assert path.read_text() == TOKEN + "\n"
    assert mode(path) == 0o600


# ---------------------------------------------------------------------------------------------- read_token
def test_read_token_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"\n  {TOKEN}  \n")
    assert read_token(path) == TOKEN


def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_text("from-the-file-0123456789")
    monkeypatch.setenv("MESHAIOS_TOKEN", " from-the-env-0123456789 ")
    assert read_token(path) == "from-the-env-0123456789"
    assert read_token() == "from-the-env-0123456789"


def test_blank_environment_variable_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_text("from-the-file-0123456789")
    for blank in ("", "   "):
        monkeypatch.setenv("MESHAIOS_TOKEN", blank)
        assert read_token(path) == "from-the-file-0123456789"


def test_token_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere"
    path.write_text("via-token-file-env-0123")
    monkeypatch.setenv("MESHAIOS_TOKEN_FILE", str(path))
    assert read_token() == "via-token-file-env-0123"


def test_default_token_file_under_the_config_dir(tmp_path: Path) -> None:
    assert security.default_token_file() == tmp_path / "xdg" / "meshaios" / "token"
    assert read_token() is None
    write_token(security.default_token_file(), TOKEN)
    assert read_token() == TOKEN


def test_missing_or_empty_file_means_no_token(tmp_path: Path) -> None:
    assert read_token(tmp_path / "absent") is None
    (tmp_path / "empty").write_text("\n \n")
    assert read_token(tmp_path / "empty") is None


def test_unreadable_token_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        read_token(tmp_path)  # a directory
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        read_token(tmp_path / "binary")


def test_each_insecure_mesh_name_has_its_own_id() -> None:
    from meshaios.security import new_mesh_name

    a, b = new_mesh_name(), new_mesh_name()
    assert a != b
    assert insecure_mesh_id(a) != insecure_mesh_id(b)
    assert insecure_mesh_id(a) == insecure_mesh_id(a)
    assert insecure_mesh_id(a).startswith("insecure")


@pytest.mark.parametrize(
    ("bind", "exposed"),
    [("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("localhost", False),
     ("0.0.0.0", True), ("192.168.1.5", True), ("::", True)],
)  # fmt: skip
def test_binding_an_insecure_node_beyond_loopback_says_what_it_exposes(bind: str, exposed: bool) -> None:
    from meshaios.security import exposure_warning

    text = exposure_warning(bind)
    assert (text is not None) == exposed
    if text is not None:
        assert "submit tasks" in text
        assert "clear text" in text
