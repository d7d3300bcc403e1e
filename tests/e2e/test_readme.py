"""The README's Python examples run: every ```python block, in order, as one script against a real server.

The blocks read the server's address from JEPA_URL (falling back to localhost:8000 for a reader),
so the script runs here as a user would run it, in an empty directory, against a fresh server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.servers import StartServer

ROOT = Path(__file__).parents[2]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def readme_python() -> list[str]:
    return PYTHON_BLOCK.findall((ROOT / "README.md").read_text())


def test_the_readme_python_blocks_run_against_a_server(start_server: StartServer, tmp_path: Path) -> None:
    blocks = readme_python()
    assert len(blocks) >= 2, "the README should show the Python client"
    script = "\n\n".join(blocks)
    assert "JEPA_URL" in script, "the examples should take the server's address from JEPA_URL"

    server = start_server()
    server.wait_for("/ready")
    work = tmp_path / "readme"
    work.mkdir()
    (work / "readme.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")}
    env["JEPA_URL"] = server.base_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "readme.py"], cwd=work, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, f"the README's Python failed:\n{result.stdout}\n{result.stderr}"
