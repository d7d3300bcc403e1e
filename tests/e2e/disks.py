"""Small disks the end-to-end tests can fill: tmpfs mounts, which need root."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(mount_point: Path, size_mb: int, covered_by: str) -> Iterator[Path]:
    """A tmpfs of `size_mb` MB at `mount_point` (made here), unmounted afterwards. Where it cannot
    be mounted (not root) the test is skipped, saying which other test `covered_by` covers it."""
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount_point)], check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {covered_by}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
