"""Kafka Connect for shmlog: a connector runtime (`shmlog connect run`) and connectors.

One module per concept (docs/connect.md):

    config        .properties / .json files, the worker's and connectors' config definitions
    data          records (SourceRecord, SinkRecord) and Connect schemas
    api           what a connector implements: Connector, SourceTask, SinkTask
    converters    String, ByteArray, JSON and Avro (the schema registry) converters
    transforms    single message transforms and predicates
    offsets       source offsets in the compacted offsets topic
    dead_letter   errors.tolerance and the dead-letter queue
    source_task / sink_task   the loop of one task process
    worker        task processes, restarts with backoff, stop
    file_stream, sql_source, sql_sink   the connectors
"""
