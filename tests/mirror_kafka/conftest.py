from tests.mirror_kafka.kafka_cluster import kafka  # noqa: F401  (the fixture)
