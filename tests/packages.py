"""Client libraries the test extra cannot hold beside each other (tweepy 3.7 and 4 beside 3.10), installed
unmodified from the package index into pytest's cache, once, for a client process to put first on its path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def installed_package(request: pytest.FixtureRequest, requirement: str) -> Path:
    """The directory ``requirement`` (``name==version``) is installed in, without its dependencies (the test
    extra brings them). Without the package index the test skips, except under ``CI=true``, where it fails."""
    target = Path(request.config.cache.mkdir(requirement.replace("==", "-")))
    if not (target / requirement.split("==")[0] / "__init__.py").exists():
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), requirement],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            message = f"cannot install {requirement} from the package index: {result.stderr.strip()[-500:]}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
    return target
