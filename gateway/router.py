"""Which mounted dialect owns a request path: the dialect whose routes it matched, else the longest prefix."""

from __future__ import annotations

from gateway.config import DIALECT_FAMILIES, Config
from gateway.dialects import FAMILIES, Dialect, RouteSpec


class DialectRouter:
    """Which dialect owns a path: from the routes a request matched, or else by the longest prefix."""

    def __init__(self, config: Config) -> None:
        self.mounts: list[tuple[str, Dialect, RouteSpec]] = []
        #: The family ([routes]) each mounted dialect serves.
        self.family: dict[Dialect, str] = {}
        self._by_prefix: list[tuple[str, Dialect]] = []
        for family in DIALECT_FAMILIES:
            dialects = [cls(config.render) for cls in FAMILIES[family]]
            self.family.update(dict.fromkeys(dialects, family))
            for prefix in getattr(config.routes, family):
                self._by_prefix.append((prefix, dialects[0]))
                self.mounts.extend((prefix, d, spec) for d in dialects for spec in d.routes)
        self._by_prefix.sort(key=lambda item: len(item[0]), reverse=True)
        self._fallback = next((d for _, d, _ in self.mounts), None) or FAMILIES["v1_1"][0](config.render)

    def for_path(self, path: str) -> Dialect:
        for prefix, dialect in self._by_prefix:
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                return dialect
        return self._fallback
