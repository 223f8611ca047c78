"""Library of the MNEMOS provisioning project: settings, facts, rendering, operations."""

import os as _os
import sys as _sys


def _keep_bytecode() -> None:
    """
    pyinfra's CLI turns Python's bytecode cache off for its whole process (pyinfra_cli/main.py sets
    `sys.dont_write_bytecode`, meant for the deploy files it executes, which are never cached
    anyway). So every run compiled this package and roles/ again: 0.06-0.07 s of the all-services
    no-op (docs/performance.md). Cache them as Python itself would: unless the interpreter was
    told not to (`-B`, PYTHONDONTWRITEBYTECODE), and only when this process's account owns the
    checkout, so a run under sudo never leaves root's files in another account's checkout.
    """
    checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    try:
        owned = _os.stat(checkout).st_uid == _os.geteuid()
    except OSError:
        owned = False
    if owned and not _sys.flags.dont_write_bytecode:
        _sys.dont_write_bytecode = False


_keep_bytecode()
