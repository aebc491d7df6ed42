"""The X API v2 edge: an HTTP client that speaks v2 and converters from v2 JSON to the neutral model."""
