"""DynamoDB behaviours moto lacks: capacity, TTL expiry, stream handlers and global-table replication."""
