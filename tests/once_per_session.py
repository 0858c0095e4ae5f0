"""A module fixture's result computed once per test session, across xdist workers too.

Under ``pytest -n``, the tests of one module may run on several workers, and a module
fixture then runs on each of them. ``once_per_session`` runs it on the first worker that
needs it, under a file lock, stores its JSON result where every worker of the session
looks (the session's base temporary directory), and the other workers read it from there.
"""

import fcntl
import json
import os


def once_per_session(tmp_path_factory, name: str, compute):
    """``compute()``'s JSON-serialisable result, computed by one process of the session.

    ``compute`` receives a directory of its own, shared by the workers, for what it
    writes besides its result (e.g. a documentation build).
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' base directories are siblings
    stored = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if stored.exists():
            return json.loads(stored.read_text())
        workdir = root / name
        workdir.mkdir(exist_ok=True)
        value = compute(workdir)
        stored.write_text(json.dumps(value))
        return value
