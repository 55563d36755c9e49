"""Running the glia-evo command line from tests, in a separate process, as a user does."""
import subprocess
import sys


def run_glia(*args, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glia_evo.cli", *args], capture_output=True,
                          text=True, timeout=timeout, **kw)
