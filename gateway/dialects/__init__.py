"""Legacy dialects. Each knows the paths, parameters, shapes and error style of one legacy API, and does
no I/O: ``parse`` turns a request into an Operation, ``render`` turns an Outcome or an error into bytes."""

from gateway.dialects.base import Dialect, LegacyRequest, LegacyResponse, RouteSpec
from gateway.dialects.statusnet import StatusNet
from gateway.dialects.twitter_events import TwitterEvents
from gateway.dialects.twitter_v1 import TwitterClassic

#: Dialects by the routes family that mounts them (the keys of the [routes] config section).
FAMILIES: dict[str, tuple[type[Dialect], ...]] = {
    "v1_1": (TwitterClassic, TwitterEvents),
    "statusnet": (StatusNet,),
}

__all__ = [
    "FAMILIES",
    "Dialect",
    "LegacyRequest",
    "LegacyResponse",
    "RouteSpec",
    "StatusNet",
    "TwitterClassic",
    "TwitterEvents",
]
