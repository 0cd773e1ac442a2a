"""Kestrel plugin: fanotify file notifications and a permission responder.

``kestrel_sources_fanotify.fanotify`` is the low-level layer other plugins
import (notifier, event records, probe); see README.md.
"""
