"""Errors that reach the user as one line and exit status 2 (see partool.cli.app)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: what is wrong, where, and what to do. The CLI prints it as one line and exits 2."""

    exit_code = 2
