"""The tracking store's opening, without MLflow until a store must be created: a store MLflow would hang on
(an unreachable server or database, an unwritable folder) or crash on (a damaged or foreign file, a scheme it
refuses, a missing database driver) is refused in seconds with one line naming the URI and the cause, and a missing
SQLite store is created whole or not at all. `probe_store` is the read-only part, cheap enough to run before a cell
imports torch.

A URI's userinfo (`user:password@`) is a credential: `redact` masks it in every text the suite prints, logs, tags
or stores (messages, the logged config, the run's params and tags)."""
from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import socket
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
SERVER_SCHEMES = ("http", "https")
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}  # MLflow's SQLAlchemy stores besides SQLite
# The keyword each database driver takes its connection timeout (seconds) by, for the probe's one connection.
_CONNECT_TIMEOUT_ARG = {"psycopg": "connect_timeout", "psycopg2": "connect_timeout", "pg8000": "timeout",
                        "mysqldb": "connect_timeout", "pymysql": "connect_timeout", "pyodbc": "timeout",
                        "pymssql": "login_timeout"}
ALLOWED_STORES = ("sqlite:///<file>, http(s)://<host>:<port> (an MLflow server), postgresql://, mysql:// or "
                  "mssql:// (a database), databricks")
_USERINFO = re.compile(r"(?<=://)[^/@\s'\"]+@")


def redact(text: str) -> str:
    """`text` with the userinfo (user:password@) of every URI in it masked as `***@`."""
    return _USERINFO.sub("***@", text)


class RedactUserinfo(logging.Filter):
    """A logging filter that masks URI userinfo in a record's message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def redact_file(path: Path) -> None:
    """Mask the URI userinfo in a text file (Hydra's saved configs), rewriting it only if it holds any."""
    if path.is_file() and (text := path.read_text()) != (masked := redact(text)):
        path.write_text(masked)


class StoreUnavailable(OSError):
    """The tracking store cannot be used; the message is one line naming the URI (or file) and the cause, the
    URI's userinfo masked."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


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
    it); a missing store is created whole or not at all. Every other store as `probe_store` checks it. Raises
    StoreUnavailable."""
    path = sqlite_path(tracking_uri)
    if path is not None:
        _open_sqlite(tracking_uri, path)
    else:
        probe_store(tracking_uri)


def probe_store(tracking_uri: str) -> bool:
    """open_store's checks that change nothing, each answered within about PROBE_TIMEOUT_S: an existing SQLite
    file must be an MLflow store; an MLflow server must answer `/health` and accept the credentials; a database
    must have its driver installed, take a TCP connection and one login; a Databricks workspace must be
    configured and reachable. MLflow's file store (which MLflow 3 refuses) and unknown schemes are refused. False
    for a SQLite store not created yet. Raises StoreUnavailable."""
    path = sqlite_path(tracking_uri)
    if path is not None:
        return _tables(tracking_uri, path) is not None
    scheme = urllib.parse.urlsplit(tracking_uri).scheme.lower()
    if scheme in SERVER_SCHEMES:
        _probe_server(tracking_uri)
    elif scheme.split("+")[0] in DATABASE_PORTS:
        _probe_database(tracking_uri)
    elif scheme == "databricks" or tracking_uri == "databricks":
        _probe_databricks(tracking_uri)
    elif scheme in ("", "file") or (len(scheme) == 1 and tracking_uri[1:3] == ":\\"):  # a path (C:\ too)
        raise StoreUnavailable(f"tracking_uri={tracking_uri!r} is MLflow's file store, which MLflow 3 refuses; "
                               f"allowed: sqlite:///{Path(urllib.parse.urlsplit(tracking_uri).path or '.').resolve()}"
                               f"/mlflow.db or another of {ALLOWED_STORES}")
    else:
        raise StoreUnavailable(f"tracking_uri={tracking_uri!r} has a scheme ({scheme}://) MLflow has no store for "
                               f"here; allowed: {ALLOWED_STORES}")
    return True


def _tcp_probe(uri: str, host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as err:
        raise StoreUnavailable(f"{what} {uri} is unreachable (no TCP connection to {host}:{port} within "
                               f"{PROBE_TIMEOUT_S:g} s: {err.strerror or err}): start it or fix tracking_uri") from None


def _server_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """(the URI without its userinfo, the Authorization header for it): from the URI's userinfo, else from
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD as MLflow's client reads them; no header without either."""
    parts = urllib.parse.urlsplit(uri)
    user, password = parts.username, parts.password
    if user is None:
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    if user is None:
        return bare, {}
    token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password or '')}".encode()
    return bare, {"Authorization": f"Basic {base64.b64encode(token).decode()}"}


def _probe_server(uri: str) -> None:
    """The server answers `/health`, then one authenticated read (401/403 there: the credentials are refused)."""
    bare, headers = _server_credentials(uri)
    for path, what in (("/health", "health check"), ("/api/2.0/mlflow/experiments/search?max_results=1", "login")):
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{bare.rstrip('/')}{path}", headers=headers),
                                        timeout=PROBE_TIMEOUT_S):
                pass
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise StoreUnavailable(
                    f"tracking server {uri} refused the {what} (HTTP {err.code} {err.reason}): it wants a user; "
                    "allowed: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD of a user it knows") from None
            raise StoreUnavailable(f"tracking server {uri} answered {path} with HTTP {err.code} {err.reason}: "
                                   f"is it an MLflow server?") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise StoreUnavailable(f"tracking server {uri} is unreachable ({reason}): start it (`make server`) or "
                                   f"fix tracking_uri") from None


def _probe_database(uri: str) -> None:
    """A SQLAlchemy store: its driver imports, its host takes a TCP connection, and one login succeeds (MLflow
    itself retries a failed connection for about two minutes)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    try:
        url = make_url(uri)
        dialect = url.get_dialect()
        dialect.import_dbapi()
    except (ArgumentError, ValueError) as err:
        scheme = urllib.parse.urlsplit(uri).scheme
        raise StoreUnavailable(f"tracking_uri={uri!r} is no database URL ({err}); allowed: "
                               f"{scheme}://HOST:PORT/DATABASE, with USER:PASSWORD@ before HOST") from None
    except ImportError as err:
        raise StoreUnavailable(f"tracking_uri={uri!r} needs the database driver {dialect.driver!r}, which is not "
                               f"installed ({err}); allowed: install it, or name an installed one "
                               f"({url.get_backend_name()}+<driver>://)") from None
    if url.host and not url.host.startswith("/"):
        _tcp_probe(uri, url.host, url.port or DATABASE_PORTS[url.get_backend_name()], "database")
    timeout_arg = _CONNECT_TIMEOUT_ARG.get(dialect.driver)
    engine = create_engine(url, poolclass=NullPool,
                           connect_args={timeout_arg: int(PROBE_TIMEOUT_S)} if timeout_arg else {})
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as err:
        cause = str(getattr(err, "orig", None) or err).strip().splitlines() or [type(err).__name__]
        raise StoreUnavailable(f"database {uri} refused the connection: {cause[0]}") from None
    finally:
        engine.dispose()


def _probe_databricks(uri: str) -> None:
    """A Databricks workspace: its host configured as Databricks' own tools read it (DATABRICKS_HOST, else the
    profile `databricks://<profile>` names, or DEFAULT, in ~/.databrickscfg) and reachable over TCP."""
    import configparser

    profile = urllib.parse.urlsplit(uri).netloc.split(":")[0] or "DEFAULT"
    host = os.environ.get("DATABRICKS_HOST")
    if not host:
        config = configparser.ConfigParser()
        config.read(os.environ.get("DATABRICKS_CONFIG_FILE") or Path.home() / ".databrickscfg")
        host = config.get(profile, "host", fallback=None) if profile in config or profile == "DEFAULT" else None
    if not host:
        raise StoreUnavailable(f"tracking_uri={uri!r}: no Databricks workspace is configured (no DATABRICKS_HOST, "
                               f"no host in profile {profile!r} of ~/.databrickscfg); allowed: DATABRICKS_HOST and "
                               "DATABRICKS_TOKEN set, or that profile")
    parts = urllib.parse.urlsplit(host if "://" in host else f"https://{host}")
    _tcp_probe(uri, parts.hostname or "", parts.port or 443, "Databricks workspace")


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
