"""legacy-dm-gateway: legacy Twitter v1/v1.1 and StatusNet direct-message calls served on X API v2."""

__version__ = "0.1.0"
