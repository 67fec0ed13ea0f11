"""The tamper-evident audit log: a hash-chained, append-only, fsync'd JSON-lines file."""
