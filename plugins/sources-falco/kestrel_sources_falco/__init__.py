"""Kestrel source plugin: Falco's JSON alerts (file, stdin, http_output) as ECS events."""
