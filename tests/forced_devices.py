"""Running a script in a subprocess with a forced number of host CPU devices."""

import json
import os
import subprocess
import sys


def run_on_devices(script: str, devices: int, *args: str, cwd, timeout: int = 600) -> dict:
    """Runs ``python -c script *args`` with ``devices`` CPU devices and returns the JSON
    object it prints on a line starting with ``RESULT``."""
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])
