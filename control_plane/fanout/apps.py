from django.apps import AppConfig


class FanoutConfig(AppConfig):
    name = "control_plane.fanout"
    label = "fanout"
    verbose_name = "Migration fan-out"
    default_auto_field = "django.db.models.BigAutoField"
