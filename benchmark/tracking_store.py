"""The tracking store's opening, without MLflow until a store must be created: a store MLflow would hang on
(an unreachable server, an unwritable folder) or crash on (a damaged or foreign file) is refused in seconds with
one line naming the URI and the cause, and a missing SQLite store is created whole or not at all.
`probe_store` is the read-only part, cheap enough to run before a cell imports torch."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from filelock import FileLock, Timeout

PROBE_TIMEOUT_S = 5.0
STORE_CREATE_TIMEOUT_S = 300.0  # waiting for another process that is creating the same store
SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreUnavailable(OSError):
    """The tracking store cannot be used; the message is one line naming the URI (or file) and the cause."""


def default_tracking_uri(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def tracking_uri_of(cfg) -> str:
    """The store a cell or grid config logs to: its `tracking_uri`, else the SQLite file in its `results_dir`."""
    return cfg.tracking_uri or default_tracking_uri(cfg.results_dir)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI, None for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(urllib.parse.unquote(tracking_uri[len("sqlite:///"):].split("?", 1)[0]))


def open_store(tracking_uri: str) -> None:
    """Fail in seconds, with one line, on a store MLflow would hang on or crash on; create a missing SQLite store.

    SQLite: the folder and the file must be writable and the file an MLflow database (checked before MLflow touches
    it); a missing store is created whole or not at all. HTTP: the server must answer `/health` within
    PROBE_TIMEOUT_S. Other stores (e.g. PostgreSQL) are left to MLflow. Raises StoreUnavailable."""
    path = sqlite_path(tracking_uri)
    if path is not None:
        _open_sqlite(tracking_uri, path)
    elif tracking_uri.startswith(("http://", "https://")):
        _probe_server(tracking_uri)


def probe_store(tracking_uri: str) -> bool:
    """open_store's checks that change nothing: an HTTP server must answer, an existing SQLite file must be an
    MLflow store. False for a SQLite store not created yet. Raises StoreUnavailable."""
    path = sqlite_path(tracking_uri)
    if path is not None:
        return _tables(tracking_uri, path) is not None
    if tracking_uri.startswith(("http://", "https://")):
        _probe_server(tracking_uri)
    return True


def _probe_server(uri: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError as err:
        raise StoreUnavailable(f"tracking server {uri} answered /health with HTTP {err.code} {err.reason}: "
                               f"is it an MLflow server?") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise StoreUnavailable(f"tracking server {uri} is unreachable ({reason}): start it (`make server`) or "
                               f"fix tracking_uri") from None


def _open_sqlite(uri: str, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent, prefix=".write-probe-"):  # SQLite writes journals here
            pass
    except OSError as err:
        raise StoreUnavailable(f"tracking store {uri}: folder {path.parent} is not writable "
                               f"({err.strerror or err})") from None
    if _tables(uri, path) is None:
        _create_sqlite_store(uri, path)
    try:
        with open(path, "r+b"):
            pass
    except OSError as err:
        raise StoreUnavailable(f"tracking store {uri}: {path} is not writable ({err.strerror or err})") from None


def _tables(uri: str, path: Path) -> set[str] | None:
    """The table names of an MLflow SQLite store; None if there is no store yet (no file, or an empty one)."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreUnavailable(f"tracking store {uri}: cannot read {path} ({err.strerror or err})") from None
    if not head:
        return None
    what_to_do = "restore it from a backup, or move it aside (a new, empty store is then created in its place)"
    if head != SQLITE_MAGIC:
        raise StoreUnavailable(f"tracking store {uri}: {path} is not an SQLite database: {what_to_do}")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" in tables:
                db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.DatabaseError as err:
        raise StoreUnavailable(f"tracking store {uri}: {path} is damaged ({err}): {what_to_do}") from None
    if not tables:
        return None
    if "alembic_version" not in tables:
        raise StoreUnavailable(f"tracking store {uri}: {path} is an SQLite database but not an MLflow store "
                               f"(no alembic_version table): point tracking_uri elsewhere, or move it aside")
    return tables


def _create_sqlite_store(uri: str, path: Path) -> None:
    """Create the schema in a temporary file and rename it into place when complete, one process at a time: the
    first process creates it, the others wait for the lock and find it made. A failure (a full disk) leaves no
    store behind, so the next attempt starts clean."""
    try:
        with FileLock(f"{path}.lock", timeout=STORE_CREATE_TIMEOUT_S):
            if _tables(uri, path) is not None:  # created meanwhile by another process
                return
            temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            try:
                _create_schema(temporary, path.parent / "mlartifacts")
                os.replace(temporary, path)
            finally:
                for leftover in (temporary, temporary.with_name(f"{temporary.name}-journal")):
                    leftover.unlink(missing_ok=True)
    except StoreUnavailable:
        raise
    except Timeout:
        raise StoreUnavailable(f"tracking store {uri}: another process has held {path}.lock for "
                               f"{STORE_CREATE_TIMEOUT_S:.0f} s while creating the store") from None
    except Exception as err:  # noqa: BLE001 - SQLAlchemy/MLflow errors (e.g. a full disk) become one line
        cause = getattr(err, "orig", None) or err
        raise StoreUnavailable(f"tracking store {uri}: could not create {path} ({type(cause).__name__}: {cause}); "
                               f"nothing was left behind") from None


def _create_schema(path: Path, artifact_root: Path) -> None:
    """MLflow's own schema creation (all migrations) into the SQLite file `path`, every connection closed after."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{path}"
    try:
        SqlAlchemyStore(uri, artifact_root.as_uri())
    finally:  # MLflow caches one engine per URI: drop and close this one before the file moves
        if (engine := SqlAlchemyStore._engine_map.pop(uri, None)) is not None:
            engine.dispose()
