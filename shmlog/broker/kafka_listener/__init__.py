"""The Kafka-protocol TCP listener: a broker process that lets any Kafka client use the broker's
logs and groups (docs/kafka-protocol.md). Started by the supervisor when `listeners` is set."""
