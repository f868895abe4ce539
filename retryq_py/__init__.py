"""retryq: a durable retry queue that lives in PostgreSQL."""
