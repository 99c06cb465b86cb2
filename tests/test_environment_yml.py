"""environment.yml is pyproject.toml's direct pins as benchmark/tools/environment_yml.py writes them, and
requirements.lock holds every one of them; a tampered copy of each file is caught."""
from __future__ import annotations

import shutil

from benchmark.tools import environment_yml
from conftest import ROOT


def copies(tmp_path):
    for name in ("pyproject.toml", "environment.yml", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path / "pyproject.toml", tmp_path / "environment.yml", tmp_path / "requirements.lock"


def check(pyproject, environment, lock) -> int:
    return environment_yml.main(["--check", "--pyproject", str(pyproject), "--out", str(environment),
                                 "--lock", str(lock)])


def test_environment_yml_and_the_lock_agree_with_pyproject(capsys):
    assert check(ROOT / "pyproject.toml", ROOT / "environment.yml", ROOT / "requirements.lock") == 0, \
        capsys.readouterr().out
    written = (ROOT / "environment.yml").read_text()
    pins = environment_yml.direct_pins(ROOT / "pyproject.toml")
    assert {"pydantic==2.14.4", "hypothesis==6.170.15", "mlflow==3.17.2"} <= set(pins)
    assert all(f"      - {pin}\n" in written for pin in pins)


def test_a_pin_changed_in_pyproject_alone_is_caught(tmp_path, capsys):
    pyproject, environment, lock = copies(tmp_path)
    pyproject.write_text(pyproject.read_text().replace('"pandas==3.1.1"', '"pandas==3.1.2"'))
    assert check(pyproject, environment, lock) == 1
    out = capsys.readouterr().out
    assert "+      - pandas==3.1.2" in out and "-      - pandas==3.1.1" in out  # the diff names it
    assert "lacks the direct pins pandas==3.1.2" in out  # and the lock holds 3.1.1


def test_a_pin_dropped_from_environment_yml_is_caught(tmp_path, capsys):
    pyproject, environment, lock = copies(tmp_path)
    environment.write_text(environment.read_text().replace("      - pydantic==2.14.4\n", ""))
    assert check(pyproject, environment, lock) == 1
    assert "+      - pydantic==2.14.4" in capsys.readouterr().out
    environment_yml.main(["--pyproject", str(pyproject), "--out", str(environment)])  # `make environment.yml`
    assert check(pyproject, environment, lock) == 0


def test_a_pin_the_lock_lacks_is_caught(tmp_path, capsys):
    pyproject, environment, lock = copies(tmp_path)
    lock.write_text(lock.read_text().replace("psycopg==3.3.9\n", "psycopg==3.3.8\n"))
    assert check(pyproject, environment, lock) == 1
    assert "lacks the direct pins psycopg[binary]==3.3.9" in capsys.readouterr().out
