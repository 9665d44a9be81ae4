"""The operators' admin site on the public host; each domain registers its own models.

Django's admin imports this module of every installed app: it names the site and imports the
domains' admin modules (control_plane.fanout and control_plane.imports are apps of their own).
"""

from django.contrib import admin

from control_plane.identity import admin as identity_admin
from control_plane.tenancy import admin as tenancy_admin
from control_plane.tenancy import move_admin

admin.site.site_header = "TaskFlow control plane"
admin.site.site_title = "TaskFlow control plane"
admin.site.index_title = "Operations"

__all__ = ["identity_admin", "move_admin", "tenancy_admin"]
