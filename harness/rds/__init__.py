"""Real RDS on PostgreSQL: engine (clusters, replication, PgBouncer), reconciler, events."""
