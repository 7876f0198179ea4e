from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from gatewayproc import GATEWAY_BIN, GatewayProcess  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    if not os.access(GATEWAY_BIN, os.X_OK):
        raise pytest.UsageError(f"gateway binary not found at {GATEWAY_BIN}: build it or set GATEWAY_BIN")


@pytest.fixture
def gateway() -> Iterator[GatewayProcess]:
    gw = GatewayProcess().start()
    try:
        yield gw
    finally:
        gw.dispose()
