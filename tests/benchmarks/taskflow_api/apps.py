from django.apps import AppConfig


class BenchTaskflowApiConfig(AppConfig):
    name = "tests.benchmarks.taskflow_api"
    label = "bench_taskflow_api"
    verbose_name = "TaskFlow API benchmark (unmanaged model over the tenant's tasks table)"
    default_auto_field = "django.db.models.BigAutoField"
