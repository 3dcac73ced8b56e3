"""noxfile.py: the claimed Python x Django combinations, and finding this machine's interpreters."""

from __future__ import annotations

import stat
from pathlib import Path

import noxfile


def fake_python(path: Path, prints: str, exit_code: int = 0) -> Path:
    """An executable that answers any question with ``prints`` (a Python reporting its version)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {prints}\nexit {exit_code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_django_6_is_claimed_only_from_python_3_12() -> None:
    assert noxfile.matrix() == [
        ("3.10", "5.2"),
        ("3.11", "5.2"),
        ("3.12", "5.2"),
        ("3.12", "6.0"),
        ("3.12", "6.1"),
        ("3.13", "5.2"),
        ("3.13", "6.0"),
        ("3.13", "6.1"),
    ]
    assert [noxfile.newest_django(python) for python in noxfile.PYTHONS] == ["5.2", "5.2", "6.1", "6.1"]


def test_the_newest_pyenv_patch_release_is_taken(tmp_path: Path) -> None:
    for release in ("3.12.1", "3.12.10", "3.12.9"):
        fake_python(tmp_path / "versions" / release / "bin" / "python3.12", "3.12")
    fake_python(tmp_path / "versions" / "3.12-dev" / "bin" / "python3.12", "3.12")  # not a release
    found, looked = noxfile.find_python("3.12", pyenv_root=tmp_path, path="")
    assert found == str(tmp_path / "versions" / "3.12.10" / "bin" / "python3.12")
    assert looked == [f"{tmp_path}/versions/3.12.*/bin/python3.12"]


def test_path_is_searched_and_a_pyenv_shim_for_another_version_is_not_taken(tmp_path: Path) -> None:
    shims, real = tmp_path / "shims", tmp_path / "bin"
    fake_python(shims / "python3.10", "pyenv: python3.10: command not found", exit_code=127)
    fake_python(real / "python3.10", "3.10")
    found, looked = noxfile.find_python("3.10", pyenv_root=tmp_path, path=f"{shims}:{real}")
    assert found is None  # which() stops at the shim, which fails
    assert looked == [f"{tmp_path}/versions/3.10.*/bin/python3.10", "python3.10 on PATH"]
    found, _ = noxfile.find_python("3.10", pyenv_root=tmp_path, path=f"{real}:{shims}")
    assert found == str(real / "python3.10")


def test_a_python_that_reports_another_version_is_not_taken(tmp_path: Path) -> None:
    fake_python(tmp_path / "versions" / "3.11.7" / "bin" / "python3.11", "3.12")
    assert noxfile.find_python("3.11", pyenv_root=tmp_path, path="")[0] is None


def test_pyproject_claims_exactly_the_tested_versions() -> None:
    assert noxfile.PYTHONS[0] == "3.10" and noxfile.PYTHONS[-1] == "3.13"
    pyproject = (noxfile.ROOT / "pyproject.toml").read_text()
    for python in noxfile.PYTHONS:
        assert f'"Programming Language :: Python :: {python}"' in pyproject
    for django in noxfile.DJANGOS:
        assert f'"Framework :: Django :: {django}"' in pyproject
    assert '"Django>=5.2,<6.2"' in pyproject
