"""Copying between clusters: `shmlog mirror` (MirrorMaker 2's semantics where they apply).

mirror  the copy loop: topics, partitions, keys, headers, timestamps; exactly-once batches
syncs   offset-sync records: the mirror's checkpoint and the upstream -> downstream offset map
groups  consumer-group offset translation through the syncs
lag     how far behind the source a mirror is

Either side is a shmlog broker or a Kafka cluster (shmlog.clients chooses the client library
from bootstrap.servers). docs/migration.md tells how to move an application with it.
"""
