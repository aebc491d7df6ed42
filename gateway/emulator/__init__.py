"""An X API v2 emulator: a real HTTP server speaking the direct-message subset the gateway uses.

The real X API is never reachable from tests, demos or benchmarks, so this stands in for it, with
seeded data, per-caller deletions, rate limits and injectable faults. Tests drive it through
``EmulatorState``; other processes through the ``/_emulator/`` control endpoints.
"""

from gateway.emulator.app import create_app
from gateway.emulator.consent import (
    EMULATOR_OAUTH2_CLIENT_ID,
    EMULATOR_OAUTH2_CLIENT_SECRET,
    EMULATOR_OAUTH2_PUBLIC_CLIENT_ID,
    OAUTH2_AUTHORIZE_PATH,
)
from gateway.emulator.faults import FaultRule
from gateway.emulator.login import APP_CONSUMER_KEY, APP_CONSUMER_SECRET
from gateway.emulator.seed import default_seed, load_seed
from gateway.emulator.server import EmulatorServer, run, serve
from gateway.emulator.state import STATE_KEY, EmulatorState, RecordedRequest
from gateway.emulator.token_endpoint import TOKEN_PATH

__all__ = [
    "APP_CONSUMER_KEY",
    "APP_CONSUMER_SECRET",
    "EMULATOR_OAUTH2_CLIENT_ID",
    "EMULATOR_OAUTH2_CLIENT_SECRET",
    "EMULATOR_OAUTH2_PUBLIC_CLIENT_ID",
    "OAUTH2_AUTHORIZE_PATH",
    "STATE_KEY",
    "TOKEN_PATH",
    "EmulatorServer",
    "EmulatorState",
    "FaultRule",
    "RecordedRequest",
    "create_app",
    "default_seed",
    "load_seed",
    "run",
    "serve",
]
