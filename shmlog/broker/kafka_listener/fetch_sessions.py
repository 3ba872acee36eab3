"""Fetch sessions (KIP-227, incremental fetch): a client that fetches many partitions sends
them once, then only what changed; the response lists only partitions with something new.

Fetch v7+ carries (session id, session epoch):

    epoch -1  no session (close session id's if given): a full fetch, session id 0 back;
    epoch 0   (re)create: the request's partitions become a new session, whose id comes back;
    epoch n   the session's n-th incremental fetch: the request holds the partitions added or
              whose fetch offset or max bytes changed, `forgotten_topics_data` those to drop;
              an unknown id is FETCH_SESSION_ID_NOT_FOUND, a wrong epoch INVALID_FETCH_SESSION_EPOCH.

As in Kafka, the client tells the broker each partition's new fetch offset (it is never
advanced here), and an incremental response holds a partition only when it has records or an
error, or its high watermark, last stable offset or log start offset moved since the session
last reported it. Sessions are the listener's, not a connection's (a client may go on over a
new connection); at most MAX_SESSIONS are kept, the least recently used going first (its
client gets FETCH_SESSION_ID_NOT_FOUND and starts a new one, as with Kafka's cache).
"""
import collections
import random
import threading
from dataclasses import dataclass

FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
MAX_SESSIONS = 1000             # Kafka's max.incremental.fetch.session.cache.slots
INITIAL_EPOCH, FINAL_EPOCH = 0, -1


@dataclass
class Wanted:
    """One partition to fetch, with the attribute names of kio's FetchPartition."""
    partition: int
    fetch_offset: int
    partition_max_bytes: int


@dataclass
class WantedTopic:
    topic: str
    partitions: list


class Session:
    def __init__(self, session_id):
        self.id = session_id
        self.epoch = 1                        # the next incremental fetch's epoch
        self.partitions = {}                  # (topic, partition) -> Wanted
        self.reported = {}                    # (topic, partition) -> (hw, lso, log start) last sent
        self.lock = threading.Lock()

    def update(self, topics, forgotten):
        for t in topics:
            for p in t.partitions:
                self.partitions[(t.topic, p.partition)] = Wanted(p.partition, p.fetch_offset, p.partition_max_bytes)
        for f in forgotten or ():
            for p in f.partitions:
                self.partitions.pop((f.topic, p), None)
                self.reported.pop((f.topic, p), None)

    def wanted(self):
        by_topic = collections.OrderedDict()
        for (topic, _), w in self.partitions.items():
            by_topic.setdefault(topic, []).append(w)
        return [WantedTopic(t, ps) for t, ps in by_topic.items()]

    def trim(self, responses, full):
        """Note what is reported; for an incremental fetch keep only what has something new."""
        out = []
        for t in responses:
            kept = []
            for p in t["partitions"]:
                key = (t["topic"], p["partition_index"])
                state = (p["high_watermark"], p["last_stable_offset"], p["log_start_offset"])
                if full or p["records"] or p["error_code"] or self.reported.get(key) != state:
                    kept.append(p)
                self.reported[key] = state
            if kept:
                out.append({**t, "partitions": kept})
        return out


class Sessions:
    def __init__(self, max_sessions=MAX_SESSIONS):
        self.max_sessions = max_sessions
        self.sessions = collections.OrderedDict()   # id -> Session, least recently used first
        self.lock = threading.Lock()

    def _new_id(self):
        while True:
            sid = random.randint(1, 0x7FFFFFFF)
            if sid not in self.sessions:
                return sid

    def open(self, req):
        """(session or None, what to fetch, error code) for a Fetch v7+ request."""
        sid, epoch = req.session_id, req.session_epoch
        with self.lock:
            if epoch in (INITIAL_EPOCH, FINAL_EPOCH):
                self.sessions.pop(sid, None)
                if epoch == FINAL_EPOCH:
                    return None, req.topics, 0
                session = Session(self._new_id())
                self.sessions[session.id] = session
                while len(self.sessions) > self.max_sessions:
                    self.sessions.popitem(last=False)
            else:
                session = self.sessions.get(sid)
                if session is None:
                    return None, None, FETCH_SESSION_ID_NOT_FOUND
                if epoch != session.epoch:
                    return None, None, INVALID_FETCH_SESSION_EPOCH
                self.sessions.move_to_end(sid)
                session.epoch = 1 if epoch >= 0x7FFFFFFF else epoch + 1
        with session.lock:
            session.update(req.topics, getattr(req, "forgotten_topics_data", None))
            return session, session.wanted(), 0
