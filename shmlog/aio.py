"""asyncio clients, as confluent_kafka.aio: AIOProducer, AIOConsumer and their serializing kin.

Every call on a client runs in one worker thread that owns it, so the event loop never blocks
and the client is never used by two threads at once:

- AIOProducer: `await produce(...)` hands the record to the producer's thread and returns an
  asyncio future at once; the future resolves to the delivered Message (or raises
  KafkaException) when its delivery report arrives, and the `on_delivery` callback, plain or
  async, runs on the event loop. The thread appends what it is handed and serves delivery
  reports in between; while the local queue is full it serves reports and tries again, up to
  max.block.ms (then `produce` raises BufferError), so the wait is in the thread, never in the loop.
- AIOConsumer: each method is awaited while the consumer's thread runs it. Rebalance
  callbacks (on_assign, on_revoke, on_lost) and on_commit, plain or async, run on the event
  loop and get the AIOConsumer; while one runs, the thread waits for it, so the callback may
  await the consumer's own methods (assign, incremental_assign, commit, ...): they run at once
  on the loop's thread, the only one touching the consumer then.
"""
from __future__ import annotations

import asyncio
import collections
import inspect
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from shmlog.client.consumer import Consumer
from shmlog.client.producer import Producer
from shmlog.client.serializing import DeserializingConsumer, SerializingProducer
from shmlog.errors import KafkaException

if TYPE_CHECKING:
    from typing_extensions import Self

    from shmlog._types import Config
    from shmlog.client.admin import ClusterMetadata
    from shmlog.message import Message, TopicPartition

__all__ = ["AIOConsumer", "AIOProducer", "AsyncDeserializingConsumer", "AsyncSerializingProducer"]

_SERVE_INTERVAL_S = 0.05  # the producer thread's longest wait for a delivery report between hand-offs


async def _settle(result):
    return await result if inspect.isawaitable(result) else result


# Config callbacks the client calls from its thread (error_cb, stats_cb, throttle_cb): plain or
# async, they run on the event loop; the client's thread does not wait for them.
_COMMON_CALLBACKS = ("error_cb", "stats_cb", "throttle_cb")


def _on_loop_later(loop, callback):
    def in_thread(*args):
        loop.call_soon_threadsafe(lambda: _run_on_loop(loop, callback, args))
    return in_thread


def _run_on_loop(loop, callback, args):
    result = callback(*args)
    if inspect.isawaitable(result):
        loop.create_task(result)


def _with_loop_callbacks(conf, loop):
    conf = dict(conf)
    for name in _COMMON_CALLBACKS:
        if conf.get(name) is not None:
            conf[name] = _on_loop_later(loop, conf[name])
    return conf


class _Worker:
    """One thread that runs calls in order; results come back as asyncio futures."""

    def __init__(self, name, loop):
        self.loop = loop
        self.jobs = collections.deque()
        self.ready = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn, *args, **kwargs):
        future = self.loop.create_future()
        with self.ready:
            if self.closed:
                raise RuntimeError("the client is closed")
            self.jobs.append((future, fn, args, kwargs))
            self.ready.notify()
        return future

    def _run(self):
        while True:
            with self.ready:
                while not self.jobs and not self.closed:
                    self.ready.wait(self.idle_timeout())
                    if not self.jobs and not self.closed:
                        self.idle()
                if not self.jobs and self.closed:
                    return
                future, fn, args, kwargs = self.jobs.popleft()
            try:
                result, error = fn(*args, **kwargs), None
            except BaseException as exc:  # handed to the awaiting coroutine
                result, error = None, exc
            self.loop.call_soon_threadsafe(self._resolve, future, result, error)
            # The finished job must not outlive it in this frame: its callbacks hold the client.
            del future, fn, args, kwargs, result, error
            self.after_job()

    @staticmethod
    def _resolve(future, result, error):
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def idle_timeout(self):
        return None

    def idle(self):
        pass

    def after_job(self):
        pass

    def close(self):
        with self.ready:
            self.closed = True
            self.ready.notify()


class _ProducerWorker(_Worker):
    """The producer's thread: between hand-offs it serves delivery reports while any are due."""

    def __init__(self, name, loop, producer):
        self.producer = producer
        super().__init__(name, loop)

    def idle_timeout(self):
        return _SERVE_INTERVAL_S if len(self.producer) else None

    def idle(self):
        self.ready.release()  # poll without holding the hand-off lock: produce() may queue more meanwhile
        try:
            if len(self.producer):
                self.producer.poll(_SERVE_INTERVAL_S)
        finally:
            self.ready.acquire()

    def after_job(self):
        self.producer.poll(0)  # reports that are due go out between hand-offs too

    def produce(self, *args, **kwargs):
        """Producer.produce, waiting (serving reports) while the local queue is full, up to max.block.ms."""
        deadline = time.monotonic() + self.producer._max_block_ms / 1000.0
        while True:
            try:
                return self.producer.produce(*args, **kwargs)
            except BufferError:
                if time.monotonic() >= deadline:
                    raise
                self.producer.poll(_SERVE_INTERVAL_S)


class AIOProducer:
    """confluent_kafka.aio.AIOProducer over shmlog's Producer. Create it inside a running loop."""

    _client = Producer

    def __init__(self, producer_conf: Config, max_workers: int = 1, executor: Any = None, batch_size: int = 1000,
                 buffer_timeout: float = 5.0) -> None:
        # max_workers, executor, batch_size and buffer_timeout are confluent's knobs for its own
        # hand-off; here one thread owns the producer and takes each record as it comes.
        self._loop = asyncio.get_running_loop()
        self._producer = self._client(_with_loop_callbacks(producer_conf, self._loop))
        self._worker = _ProducerWorker("shmlog-aio-producer", self._loop, self._producer)
        weakref.finalize(self, self._worker.close)   # dropped without close(): the thread ends, the producer goes

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def produce(self, topic: str, value: Any = None, key: Any = None,
                      **kwargs: Any) -> asyncio.Future[Message]:
        """Queue one record; returns a future of its delivered Message (KafkaException on failure)."""
        delivered = self._loop.create_future()
        user_callback = kwargs.pop("on_delivery", None)
        user_callback = kwargs.pop("callback", None) if user_callback is None else user_callback
        loop = self._loop

        def report(err, msg):  # in the producer's thread
            loop.call_soon_threadsafe(self._delivered, delivered, user_callback, err, msg)

        await self._worker.submit(self._worker.produce, topic, value=value, key=key, on_delivery=report, **kwargs)
        return delivered

    def _delivered(self, future, user_callback, err, msg):
        if not future.done():
            if err is None:
                future.set_result(msg)
            else:
                future.set_exception(KafkaException(err))
        if user_callback is not None:
            result = user_callback(err, msg)
            if inspect.isawaitable(result):
                self._loop.create_task(result)

    async def _call(self, fn, *args, **kwargs):
        return await self._worker.submit(fn, *args, **kwargs)

    async def poll(self, timeout: float = 0, *args: Any, **kwargs: Any) -> int:
        return await self._call(self._producer.poll, timeout, *args, **kwargs)

    async def flush(self, *args: Any, **kwargs: Any) -> int:
        return await self._call(self._producer.flush, *args, **kwargs)

    async def purge(self, *args: Any, **kwargs: Any) -> None:
        return await self._call(self._producer.purge, *args, **kwargs)

    async def list_topics(self, *args: Any, **kwargs: Any) -> ClusterMetadata:
        return await self._call(self._producer.list_topics, *args, **kwargs)

    async def init_transactions(self, *args: Any, **kwargs: Any) -> None:
        return await self._call(self._producer.init_transactions, *args, **kwargs)

    async def begin_transaction(self, *args: Any, **kwargs: Any) -> None:
        return await self._call(self._producer.begin_transaction, *args, **kwargs)

    async def send_offsets_to_transaction(self, *args: Any, **kwargs: Any) -> None:
        return await self._call(self._producer.send_offsets_to_transaction, *args, **kwargs)

    async def commit_transaction(self, *args: Any, **kwargs: Any) -> None:
        return await self._call(self._producer.commit_transaction, *args, **kwargs)

    async def abort_transaction(self, *args: Any, **kwargs: Any) -> None:
        return await self._call(self._producer.abort_transaction, *args, **kwargs)

    async def close(self) -> None:
        """Deliver what is queued (flush), then stop the producer's thread."""
        if self._worker.closed:
            return
        await self._call(self._producer.flush)
        await self._call(self._producer.close)
        self._worker.close()
        await asyncio.to_thread(self._worker.thread.join)


class AsyncSerializingProducer(AIOProducer):
    """AIOProducer over SerializingProducer (key.serializer / value.serializer in the config)."""

    _client = SerializingProducer


class AIOConsumer:
    """confluent_kafka.aio.AIOConsumer over shmlog's Consumer. Create it inside a running loop."""

    if TYPE_CHECKING:   # the Consumer methods _delegate() adds below, as type checkers see them
        async def poll(self, timeout: float | None = None) -> Message | None: ...
        async def consume(self, num_messages: int = 1, timeout: float | None = None) -> list[Message]: ...
        async def unsubscribe(self) -> None: ...
        async def commit(self, message: Message | None = None, offsets: list[TopicPartition] | None = None,
                         asynchronous: bool = True) -> list[TopicPartition] | None: ...
        async def seek(self, partition: TopicPartition) -> None: ...
        async def pause(self, partitions: list[TopicPartition]) -> None: ...
        async def resume(self, partitions: list[TopicPartition]) -> None: ...
        async def store_offsets(self, message: Message | None = None,
                                offsets: list[TopicPartition] | None = None) -> None: ...
        async def committed(self, partitions: list[TopicPartition],
                            timeout: float | None = None) -> list[TopicPartition]: ...
        async def assign(self, partitions: list[TopicPartition]) -> None: ...
        async def unassign(self) -> None: ...
        async def incremental_assign(self, partitions: list[TopicPartition]) -> None: ...
        async def incremental_unassign(self, partitions: list[TopicPartition]) -> None: ...
        async def assignment(self) -> list[TopicPartition]: ...
        async def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...
        async def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata: ...
        async def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None,
                                        cached: bool = False) -> tuple[int, int]: ...
        async def offsets_for_times(self, partitions: list[TopicPartition],
                                    timeout: float | None = None) -> list[TopicPartition]: ...
        async def memberid(self) -> str | None: ...


    _client = Consumer
    _CONF_CALLBACKS = ("on_commit",)
    _SUBSCRIBE_CALLBACKS = ("on_assign", "on_revoke", "on_lost")

    def __init__(self, consumer_conf: Config, max_workers: int = 1, executor: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._in_callback = 0
        conf = _with_loop_callbacks(consumer_conf, self._loop)
        for name in self._CONF_CALLBACKS:
            if conf.get(name) is not None:
                conf[name] = self._on_loop(conf[name], pass_self=False)
        self._consumer = self._client(conf)
        self._worker = _Worker("shmlog-aio-consumer", self._loop)
        weakref.finalize(self, self._worker.close)   # dropped without close(): the thread ends, the consumer goes

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_loop(self, callback, pass_self):
        """A callback for the consumer's thread that runs `callback` on the loop and waits for it."""
        def in_thread(*args):
            if pass_self:
                args = (self, *args[1:])
            self._in_callback += 1
            try:
                asyncio.run_coroutine_threadsafe(_settle(callback(*args)), self._loop).result()
            finally:
                self._in_callback -= 1
        return in_thread

    async def _call(self, fn, *args, **kwargs):
        if self._in_callback:
            return fn(*args, **kwargs)  # the consumer's thread waits for this callback: the consumer is ours
        return await self._worker.submit(fn, *args, **kwargs)

    async def subscribe(self, topics: list[str], *args: Any, **kwargs: Any) -> None:
        for name in self._SUBSCRIBE_CALLBACKS:
            if kwargs.get(name) is not None:
                kwargs[name] = self._on_loop(kwargs[name], pass_self=True)
        return await self._call(self._consumer.subscribe, topics, *args, **kwargs)

    async def close(self, *args: Any, **kwargs: Any) -> None:
        if self._worker.closed:
            return None
        try:
            return await self._call(self._consumer.close, *args, **kwargs)
        finally:
            self._worker.close()
            await asyncio.to_thread(self._worker.thread.join)


def _delegate(name):
    async def method(self, *args, **kwargs):
        return await self._call(getattr(self._consumer, name), *args, **kwargs)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Consumer.{name}, awaited while the consumer's thread runs it."
    return method


for _name in ("poll", "consume", "unsubscribe", "commit", "seek", "pause", "resume", "store_offsets",
              "committed", "assign", "unassign", "incremental_assign", "incremental_unassign", "assignment",
              "position", "list_topics", "get_watermark_offsets", "offsets_for_times", "memberid"):
    setattr(AIOConsumer, _name, _delegate(_name))


class AsyncDeserializingConsumer(AIOConsumer):
    """AIOConsumer over DeserializingConsumer (key.deserializer / value.deserializer in the config)."""

    _client = DeserializingConsumer
