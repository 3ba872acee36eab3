"""The `shmlog` command: one click group per subject (app.py is the root)."""
from shmlog.cli.app import main

__all__ = ["main"]
