"""The typed keys of what the gateway application holds (set by ``create_app`` and its resources) and of what
a request carries through the middleware and handlers. In one place, so that every module reading them
imports this one rather than the application factory."""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDictProxy

from gateway.auth.inbound import Authenticator
from gateway.config import Config
from gateway.dialects import Dialect
from gateway.metrics import Metrics
from gateway.router import DialectRouter
from gateway.service import DMService
from gateway.small_ids import IdTranslator
from gateway.store.base import Store
from gateway.upstream.resilience import Breakers

CONFIG_KEY = web.AppKey("config", Config)
METRICS_KEY = web.AppKey("metrics", Metrics)
CLIENT_TIMEOUT_KEY = web.AppKey("client_timeout", float)  # server.client_timeout, for gateway.slow_clients
SERVICE_KEY = web.AppKey("service", DMService)
STORE_KEY = web.AppKey("store", Store)
ROUTER_KEY = web.AppKey("router", DialectRouter)
AUTH_KEY = web.AppKey("authenticator", Authenticator)
BREAKERS_KEY = web.AppKey("breakers", Breakers)
ID_TRANSLATOR_KEY = web.AppKey("id_translator", IdTranslator)

REQUEST_ID = web.RequestKey("request_id", str)
DIALECT = web.RequestKey("dialect", Dialect)
FORMAT = web.RequestKey("format", str)
FORM = web.RequestKey("form", MultiDictProxy)
