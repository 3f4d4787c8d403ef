"""ruff, with the project's rules (pyproject.toml [tool.ruff], Airflow's AIR rules included), finds nothing."""
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing_in_the_project():
    ruff = Path(sys.executable).with_name("ruff")                  # the venv's pinned ruff, else PATH's
    command = [str(ruff) if ruff.exists() else shutil.which("ruff") or "ruff", "check", "--output-format=concise", "."]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"ruff check . found problems (fix them, or `ruff check --fix .`):\n{result.stdout}"
