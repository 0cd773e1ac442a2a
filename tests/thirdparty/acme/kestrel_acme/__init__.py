"""Acme's Kestrel plugin: a Falco JSON source and a plain-text alert log sink."""
