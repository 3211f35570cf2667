"""``nextclick bench``: load-test tooling for the serving path (HTTP load client, Redis
compare-and-set comparison, Redis memory probe, engine-alone timing). Not imported by the
service."""
