"""Stores: what the gateway has learned about messages and users, keyed by id, and the credentials it holds.
The protocols are in ``base``, the factory that opens one from a store URL in ``factory``."""

from gateway.store.base import MessageStore, Store

__all__ = ["MessageStore", "Store"]
