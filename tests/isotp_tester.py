"""Runs tests/isotp_client.py (udsoncan over can-isotp) in a process of its own, as a workshop
tester on another machine would be, and returns what each operation gave."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

CLIENT = Path(__file__).with_name("isotp_client.py")
# python-can's udp_multicast port: the daemon's bus uses it (the configuration sets the group).
DEFAULT_PORT = 43113


async def run_isotp_tester(group: str, port: int, *operations: str) -> list[Any]:
    """The result of each operation (`vin`, `dtcs`, `clear`, `write_vin`), in order."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT),
        group,
        str(port),
        *operations,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    results: list[tuple[str, Any]] = json.loads(out)
    assert [operation for operation, _ in results] == list(operations)
    return [result for _, result in results]
