"""What `python -m benchmark.run` exits with, for a single run and a grid alike (benchmark/run.py says when), and
the one line that says why. Imports nothing heavy: the command line reports with it whatever failed, an installed
plugin's import included."""
from __future__ import annotations

from hydra.errors import HydraException

from benchmark.checks import ConfigError

EXIT_FAILED = 1  # some cell failed
EXIT_REJECTED = 2  # the config was rejected before any compute


def one_line(err: BaseException) -> str:
    """An error as one line: config mistakes as they are, Hydra's multi-line messages joined (a list of options
    after a colon becomes comma-separated), other errors with their type; the first line of the cause is added
    when the message does not already hold it (it often names the key)."""
    text, in_list = "", False
    for line in (line.strip() for line in str(err).splitlines()):
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=")):
            continue
        if not text:
            text = line
        elif text.endswith(":"):
            text, in_list = f"{text} {line}", True
        elif in_list and " " not in line:  # Hydra lists a group's options one per line
            text += f", {line}"
        elif line.startswith("Config search path:"):  # Hydra's search path: noise for a config mistake
            break
        else:
            text, in_list = f"{text}{' ' if text.endswith('.') else '; '}{line}", False
    cause = str(err.__cause__ or "").strip().splitlines()
    if cause and cause[0] not in text:
        text += f" ({cause[0]})"
    return text if isinstance(err, (ConfigError, HydraException)) else f"{type(err).__name__}: {text}"
