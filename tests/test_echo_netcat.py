"""A client nobody here wrote: netcat-openbsd pipes a file through the
server (``nc -N`` shuts down its sending side at the end of input) and gets
the same bytes back."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from echo_helpers import serving
from pollkit import Poller

NC = shutil.which("nc")


def is_openbsd_netcat() -> bool:
    if NC is None:
        return False
    result = subprocess.run([NC, "-h"], capture_output=True, text=True, timeout=10, check=False)
    return "OpenBSD" in result.stdout + result.stderr


@pytest.mark.skipif(not is_openbsd_netcat(), reason="nc (netcat-openbsd, for -N) is not installed")
@pytest.mark.timeout(60)
def test_nc_gets_the_same_bytes_back(poller: Poller, tmp_path: Path) -> None:
    payload = random.Random(4).randbytes(3 * 1024 * 1024)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    with serving(poller) as server, source.open("rb") as stdin:
        host, port = server.address
        result = subprocess.run(
            [str(NC), "-N", host, str(port)],
            stdin=stdin,
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == len(payload)
    assert result.stdout == payload
