"""Message stores: what the gateway has learned about messages and users, keyed by id."""

from gateway.store.base import MessageStore, open_store

__all__ = ["MessageStore", "open_store"]
