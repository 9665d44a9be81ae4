from django.apps import AppConfig


class BenchTaskflowConfig(AppConfig):
    name = "tests.benchmarks.bench_taskflow"
    label = "bench_taskflow"
    verbose_name = "TaskFlow tables (benchmark only)"
    default_auto_field = "django.db.models.BigAutoField"
