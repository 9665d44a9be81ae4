"""The marker that makes an admin page reload itself while it shows a job that is still running.

control_plane/static/control_plane/live_refresh.js looks for it; the moves, imports and tenant
pages render it next to a job's status only while that job is queued or running.
"""

from __future__ import annotations

from django.utils.html import format_html
from django.utils.safestring import SafeString

REFRESH_MS = 2000
SCRIPT = "control_plane/live_refresh.js"


def live_marker(active: bool) -> SafeString:
    """The element live_refresh.js looks for: present only while a job on the page runs."""
    if not active:
        return SafeString("")
    return format_html('<span data-live-refresh="{}" hidden></span>', REFRESH_MS)
