"""Stores: what the gateway has learned about messages and users, keyed by id, and the credentials it holds."""

from gateway.store.base import MessageStore, Store, open_store

__all__ = ["MessageStore", "Store", "open_store"]
