"""`make server`: MLflow's tracking server, open on loopback, authenticated beyond it.

On loopback (127.0.0.1, localhost, ::1) only this machine's users reach the server: it runs as `mlflow server`.
On any other host (e.g. SERVER_HOST=0.0.0.0 for a cluster) it runs MLflow's own authentication app
(`mlflow server --app-name basic-auth`): every request needs a user's password (401 without one), users live in
the app's own database (`<auth-dir>/users.db` unless --auth-db-uri), and the admin user is created on the first
start with the password in MLFLOW_AUTH_ADMIN_PASSWORD. The app's settings file and its session secret are written
to `<auth-dir>` (under results/, never committed); MLflow reads them from MLFLOW_AUTH_CONFIG_PATH and
MLFLOW_FLASK_SERVER_SECRET_KEY. An open, writable server beyond loopback is refused (exit code 2): there is no
switch for it. Cells authenticate with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (docs/scaling.md).
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from benchmark.tracking_store import redact

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
EXIT_REFUSED = 2
# New users may read every experiment; they write to the experiments they create (MLflow grants their creator
# MANAGE) and to those an admin grants them.
DEFAULT_PERMISSION = "READ"


def auth_settings(auth_dir: Path, auth_db_uri: str | None) -> dict[str, str]:
    """Write the auth app's settings file and a stable session secret into `auth_dir`; returns the environment
    that points MLflow at them."""
    auth_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    database = auth_db_uri or f"sqlite:///{(auth_dir / 'users.db').resolve()}"
    config = auth_dir / "basic_auth.ini"
    config.write_text("[mlflow]\n"
                      f"default_permission = {DEFAULT_PERMISSION}\n"
                      f"database_uri = {database}\n"
                      "admin_username = admin\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    config.chmod(0o600)
    secret = auth_dir / "secret_key"
    if not secret.exists():  # one key for every worker and restart (MLflow's CSRF protection needs it stable)
        secret.touch(mode=0o600)
        secret.write_text(secrets.token_hex(32))
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config.resolve())}
    if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secret.read_text().strip()
    return env


def server_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and the environment it needs; SystemExit(2) with one line for an open
    server beyond loopback."""
    auth = args.auth or args.host not in LOOPBACK
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", args.backend_store_uri,
               "--artifacts-destination", args.artifacts_destination, "--host", args.host, "--port", str(args.port),
               "--workers", str(args.workers)]
    if not auth:
        return command, {}
    users = Path(args.auth_dir) / "users.db"
    if not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") and not (args.auth_db_uri or users.exists()):
        print(f"server refused: SERVER_HOST={args.host} is beyond loopback, so the server runs MLflow's "
              "basic-auth app, whose admin user needs a password; allowed: MLFLOW_AUTH_ADMIN_PASSWORD=<password> "
              "in the environment (first start), or SERVER_HOST=127.0.0.1", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)
    return command + ["--app-name", "basic-auth"], auth_settings(Path(args.auth_dir), args.auth_db_uri)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend-store-uri", required=True)
    parser.add_argument("--artifacts-destination", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--auth-dir", required=True, help="the auth app's settings, secret and users database")
    parser.add_argument("--auth-db-uri", default=None, help="the users database (default: <auth-dir>/users.db)")
    parser.add_argument("--auth", action="store_true", help="authenticate on loopback too")
    args = parser.parse_args(argv)
    command, env = server_command(args)
    print(f"mlflow server on {args.host}:{args.port}{' (basic-auth)' if env else ''}, store "
          f"{redact(args.backend_store_uri)}", file=sys.stderr)
    os.execve(command[0], command, {**os.environ, **env})


if __name__ == "__main__":
    main()
