"""``nirvis serve``: the web service over a gallery (FastAPI on uvicorn), bound to 127.0.0.1 by default.

Register it on the CLI app with ``app.command("serve")(serve)``. Only typer and the standard library are
imported at the top, so ``nirvis --help`` stays instant; FastAPI, uvicorn and the face pipeline load when the
command runs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["serve", "read_token", "TOKEN_ENV", "MIN_TOKEN_LENGTH"]

#: Environment variable holding the write token when no ``--token-file`` is given.
TOKEN_ENV = "NIRVIS_TOKEN"
#: Shortest token accepted: a guessable token would protect nothing.
MIN_TOKEN_LENGTH = 16


class TokenError(ValueError):
    """The token file or ``$NIRVIS_TOKEN`` cannot be used; the message says why and what to do."""


def read_token(token_file: Path | None, environ: dict[str, str] | None = None) -> tuple[str | None, str]:
    """The write token and where it came from: ``--token-file`` first, else ``$NIRVIS_TOKEN``, else none.

    Returns
    -------
    (token, source)
        ``token`` is ``None`` when neither is given (the service is then read-only); ``source`` names where it
        came from, for the log.

    Raises
    ------
    TokenError
        The file is missing, unreadable or empty, or the token is shorter than :data:`MIN_TOKEN_LENGTH`
        characters or contains whitespace.
    """
    env = os.environ if environ is None else environ
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TokenError(f"--token-file {token_file}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"--token-file {token_file}: unreadable ({exc})") from None
        token, source = text.strip(), f"--token-file {token_file}"
    elif env.get(TOKEN_ENV, "").strip():
        token, source = env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    else:
        return None, "none"
    if not token:
        raise TokenError(f"{source}: empty; put a random token in it, e.g. the output of "
                         "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    if any(ch.isspace() for ch in token):
        raise TokenError(f"{source}: the token contains whitespace; use one line of letters, digits and symbols")
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"{source}: the token has {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
                         "random ones, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token, source


def _loose_permissions(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def serve(
    gallery: Annotated[Path, typer.Option("--gallery", "-g", help="The gallery to search (made by nirvis enroll).")],
    host: Annotated[str, typer.Option(help="Address to bind; the default serves this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    token_file: Annotated[Optional[Path], typer.Option("--token-file", help=f"File holding the bearer token of the write endpoints (else ${TOKEN_ENV}); without a token the service is read-only.")] = None,
    models_dir: Annotated[Optional[Path], typer.Option("--models-dir", help="Folder of model files, looked in first.")] = None,
    max_upload_mb: Annotated[float, typer.Option(min=0.01, help="Largest request body (upload), MiB; larger ones get 413.")] = 20.0,
    top: Annotated[int, typer.Option(min=1, max=100, help="Matches returned when a request does not say.")] = 5,
) -> None:
    """Serve a gallery over HTTP (identify, enrol, list, remove) with an investigator's page at /.

    Endpoints: POST /identify, POST /enroll, GET /people, DELETE /people/{id}, GET /health, and the OpenAPI
    schema at /openapi.json. Write endpoints need 'Authorization: Bearer <token>', the token read from --token-file or $NIRVIS_TOKEN;
    without one the service starts read-only and says so.
    """
    from nirvis.errors import NirvisError

    def fail(msg: str, code: int = 2) -> None:
        typer.echo(f"error: {msg}", err=True)
        raise typer.Exit(code)

    try:
        token, source = read_token(token_file)
    except TokenError as exc:
        fail(str(exc))
    if token_file is not None and _loose_permissions(token_file):
        typer.echo(f"warning: --token-file {token_file} can be read by other users; chmod 600 it", err=True)
    try:
        import uvicorn

        from nirvis.service.app import create_app
    except ImportError as exc:  # pragma: no cover - the dependencies are installed with nirvis
        fail(f"nirvis serve needs fastapi, uvicorn and python-multipart ({exc}); pip install nirvis again")
    if not gallery.exists():
        fail(f"--gallery {gallery}: no such gallery; create it with nirvis enroll --gallery {gallery} PATHS...")
    try:
        app = create_app(gallery, token=token, models_dir=models_dir,
                         max_upload_bytes=int(max_upload_mb * 1024 * 1024), top=top)
    except (NirvisError, ValueError, OSError) as exc:
        fail(f"--gallery {gallery}: {exc}" if str(gallery) not in str(exc) else str(exc), code=1)
    if token is not None:  # without one, create_app has logged (a warning) that the service is read-only
        typer.echo(f"nirvis serve: write endpoints need 'Authorization: Bearer <token>' (token from {source})",
                   err=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(f"warning: --host {host} serves other machines over plain HTTP: the token travels in clear "
                       "text; put a TLS proxy in front", err=True)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"nirvis serve: http://{shown}:{port}/ (page), /docs (API); Ctrl+C stops", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
