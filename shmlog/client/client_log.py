"""A client's log lines, routed as confluent-kafka routes librdkafka's.

Each line goes to the `logger` config (a logging.Logger) as
`logger.log(level, "%s [%s] %s", FACILITY, client name, text)` — confluent-kafka's call — or,
without one, to the `shmlog.client` logger. `log_level` is the syslog level above which
nothing is emitted; `debug` names the contexts whose debug lines are written (librdkafka's
names; `all` for every one) and, like librdkafka, raises the level to 7 for them.
"""
import itertools
import logging

# syslog level -> logging level, as confluent-kafka maps librdkafka's
_LEVELS = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, 3: logging.ERROR, 4: logging.WARNING,
           5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}
_DEBUG = 7
_names = itertools.count(1)


class ClientLog:
    def __init__(self, cfg=None, kind="client"):
        """cfg: a parsed client config (None: the defaults: the shmlog.client logger, level 6)."""
        self.logger = (cfg.logger if cfg is not None else None) or logging.getLogger("shmlog.client")
        self.name = f"{(cfg.get('client.id') if cfg is not None else None) or 'rdkafka'}#{kind}-{next(_names)}"
        self.contexts = frozenset((cfg.debug if cfg is not None else None) or ())
        self.max_level = max(cfg.log_level if cfg is not None else 6, _DEBUG if self.contexts else 0)

    def enabled(self, context):
        """True when `debug` names this context (or all): build costly debug text only then."""
        return context in self.contexts or "all" in self.contexts

    def debug(self, context, facility, text):
        if self.enabled(context):
            self._emit(_DEBUG, facility, text)

    def info(self, facility, text):
        self._emit(6, facility, text)

    def warning(self, facility, text):
        self._emit(4, facility, text)

    def error(self, facility, text):
        self._emit(3, facility, text)

    def _emit(self, level, facility, text):
        if level <= self.max_level:
            try:
                self.logger.log(_LEVELS[level], "%s [%s] %s", facility, self.name, text)
            except Exception:  # a broken user logger must not break the client (librdkafka's rule too)
                pass
