"""shmlog.streams: stateful, windowed, exactly-once stream processing over shmlog topics.

    from shmlog.streams import App, Sum
    app = App({"bootstrap.servers": ..., "application.id": "vwap"})
    app.stream("trades").group_by("symbol").tumbling_window(60_000).agg(
        notional=Sum("notional"), qty=Sum("qty")).final().to_topic("vwap")
    app.run(workers=2)

docs/streams.md has the whole guide.
"""
from shmlog.streams.aggregations import Aggregator, Count, Latest, Max, Mean, Min, Reduce, Sum
from shmlog.streams.app import App, GlobalTable
from shmlog.streams.dataframe import StreamingDataFrame
from shmlog.streams.ktable import KTable
from shmlog.streams.steps import State

__all__ = ["App", "GlobalTable", "KTable", "StreamingDataFrame", "State", "Aggregator", "Count", "Sum", "Min", "Max",
           "Mean", "Latest", "Reduce"]
