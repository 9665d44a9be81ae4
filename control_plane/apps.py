from django.apps import AppConfig


class ControlPlaneConfig(AppConfig):
    name = "control_plane"
    verbose_name = "Control plane"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from control_plane.http import converters

        converters.register()  # before any URLConf is loaded
        from control_plane.identity import principal_signals  # noqa: F401 - connects the receivers
        from control_plane.observability import metrics, worker_signals  # noqa: F401 - connects them

        if metrics.enabled():
            metrics.watch_pools()
