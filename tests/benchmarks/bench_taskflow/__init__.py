"""TaskFlow-like tables as Django models, only for the onboarding benchmark's django-tenants path.

Never installed by the platform's settings; `tests.benchmarks.djt_settings` adds it to TENANT_APPS.
"""
