"""``nirvis serve``: where the token comes from, and the errors before the server starts.

The server itself is started by the real command in ``test_browser.py``.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nirvis.service.command import MIN_TOKEN_LENGTH, TOKEN_ENV, TokenError, read_token

GOOD = "x" * MIN_TOKEN_LENGTH


def test_token_file_first_then_environment(tmp_path):
    f = tmp_path / "token"
    f.write_text(f"  {GOOD}-file\n")
    assert read_token(f, {TOKEN_ENV: GOOD + "-env"}) == (GOOD + "-file", f"--token-file {f}")
    assert read_token(None, {TOKEN_ENV: GOOD + "-env"}) == (GOOD + "-env", f"${TOKEN_ENV}")
    assert read_token(None, {}) == (None, "none")
    assert read_token(None, {TOKEN_ENV: "   "}) == (None, "none")


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("short", f"the token has 5 characters; use at least {MIN_TOKEN_LENGTH}"),
    (GOOD + " " + GOOD, "contains whitespace"),
])
def test_bad_tokens_are_refused(tmp_path, content, message):
    f = tmp_path / "token"
    f.write_text(content)
    with pytest.raises(TokenError, match=message):
        read_token(f, {})


def test_missing_token_file(tmp_path):
    with pytest.raises(TokenError, match="no such file"):
        read_token(tmp_path / "nope", {})


def test_serve_fails_clearly_before_starting(tmp_path, monkeypatch):
    from nirvis.cli import app

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    runner = CliRunner()
    r = runner.invoke(app, ["serve", "--gallery", str(tmp_path / "nothing")])
    assert r.exit_code == 2
    assert "no such gallery" in r.output and "nirvis enroll --gallery" in r.output
    f = tmp_path / "token"
    f.write_text("short")
    r = runner.invoke(app, ["serve", "--gallery", str(tmp_path), "--token-file", str(f)])
    assert r.exit_code == 2 and "the token has 5 characters" in r.output
    (tmp_path / "notagallery").mkdir()
    r = runner.invoke(app, ["serve", "--gallery", str(tmp_path / "notagallery")])
    assert r.exit_code == 1 and "not a nirvis gallery" in r.output
    assert "Traceback" not in r.output


def test_serve_help_is_light():
    """``nirvis serve --help`` does not import FastAPI, uvicorn or torch."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from nirvis.cli import app; "
            "r = CliRunner().invoke(app, ['serve', '--help']); assert r.exit_code == 0, r.output; "
            "assert '--token-file' in r.output; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
