"""Key-value store: Redis when configured and reachable, an in-memory dict otherwise."""


class Store:
    def __init__(self, redis_url=None):
        self._memory = {}
        self._client = None
        if redis_url:
            import redis
            self._client = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def status(self):
        """"ok", "disabled" (no Redis configured) or "unavailable" (using the in-memory fallback)."""
        if self._client is None:
            return "disabled"
        try:
            self._client.ping()
            return "ok"
        except Exception:
            return "unavailable"

    def get(self, key):
        if self._client is not None and self.status() == "ok":
            value = self._client.get(key)
            return value.decode() if value is not None else None
        return self._memory.get(key)

    def set(self, key, value):
        if self._client is not None and self.status() == "ok":
            self._client.set(key, value)
        else:
            self._memory[key] = value
