"""confluent/type/*.proto (see shmlog.schema_registry.confluent)."""
