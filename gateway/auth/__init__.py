"""Who is calling (inbound) and which credential the gateway presents to X API v2 for them."""
