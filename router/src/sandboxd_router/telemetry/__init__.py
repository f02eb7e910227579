"""The router's telemetry process: what the request path records, read off a shared ring and
turned into the access log, aggregates, request records and spans (issue 13). Nothing here
runs on the request path's thread."""
