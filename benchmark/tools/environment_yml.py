"""environment.yml (the conda environment) written from pyproject.toml: the project's direct pins and those of the
extras requirements.lock installs (`test`, `postgres`), so the two files cannot disagree.

    python -m benchmark.tools.environment_yml           # rewrite environment.yml (`make environment.yml`)
    python -m benchmark.tools.environment_yml --check   # exit 1 naming what differs: environment.yml out of date,
                                                        # or a direct pin that requirements.lock does not hold
"""
from __future__ import annotations

import argparse
import difflib
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The extras requirements.lock holds besides the dependencies (`ray` has its own lock, requirements-ray.lock).
LOCKED_EXTRAS = ("test", "postgres")
HEADER = """\
# Generated from pyproject.toml by `make environment.yml` (benchmark/tools/environment_yml.py): the project's
# direct pins and its extras {extras}; the full lock is requirements.lock.
# conda env create -f environment.yml && conda activate prunesec
name: prunesec
channels:
  - conda-forge
dependencies:
  - python={python}
  - pip
  - pip:
"""


def direct_pins(pyproject: Path) -> list[str]:
    """The dependencies and the locked extras' requirements of pyproject.toml, in its order."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(pin for extra in LOCKED_EXTRAS for pin in extras.get(extra, []))]


def render(pyproject: Path) -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    python = project["requires-python"].split(",")[0].removeprefix(">=")  # ">=3.11,<3.12" -> 3.11
    header = HEADER.format(extras=", ".join(f"`{e}`" for e in LOCKED_EXTRAS), python=python)
    return header + "".join(f"      - {pin}\n" for pin in direct_pins(pyproject))


def difference(pyproject: Path, environment: Path) -> str:
    """'' when `environment` is what pyproject.toml gives, else a unified diff (what `--check` prints)."""
    written = environment.read_text() if environment.exists() else ""
    return "".join(difflib.unified_diff(written.splitlines(True), render(pyproject).splitlines(True),
                                        str(environment), f"generated from {pyproject.name}"))


def _name_and_version(pin: str) -> tuple[str, str]:
    name, version = pin.split("==")
    return name.split("[")[0].lower().replace("_", "-"), version.strip()  # psycopg[binary] is locked as psycopg


def missing_from_lock(pyproject: Path, lock: Path) -> list[str]:
    """The direct pins that requirements.lock does not hold at the same version."""
    locked = {_name_and_version(line) for line in lock.read_text().splitlines() if "==" in line}
    return [pin for pin in direct_pins(pyproject) if _name_and_version(pin) not in locked]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when environment.yml is out of date")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "environment.yml")
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    args = parser.parse_args(argv)
    if args.check:
        failed = False
        if diff := difference(args.pyproject, args.out):
            print(f"{args.out} does not match {args.pyproject}: run `make environment.yml`\n{diff}", end="")
            failed = True
        if missing := missing_from_lock(args.pyproject, args.lock):
            print(f"{args.lock} lacks the direct pins {', '.join(missing)} of {args.pyproject}")
            failed = True
        return int(failed)
    args.out.write_text(render(args.pyproject))
    return 0


if __name__ == "__main__":
    sys.exit(main())
