"""Emulated AWS: moto served by dbdrill's own HTTP server, with regions, API faults and DynamoDB behaviours."""
