import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["sac.py", "td3.py"])
def test_agent_script_runs_end_to_end(script, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "agents" / script), "--env", "Pendulum-v1", "--density", "0.2",
         "--steps", "300", "--logdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "evaluation return over 5 episodes" in result.stdout
    assert list(tmp_path.rglob("events.out.tfevents.*")), "TensorBoard events must be written"
