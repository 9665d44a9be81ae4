"""Settings of the platform, read from the environment.

Defaults work on a developer's machine; production (DJANGO_ENV=production) refuses to start
with a development secret or with DEBUG on.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from control_plane.http import converters
from control_plane.observability.logging import configure_structlog, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = BASE_DIR / ".data"

env = environ.Env()

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "test", "production"}:
    raise ImproperlyConfigured(
        f"DJANGO_ENV must be development, test or production, not {DJANGO_ENV!r}"
    )
PRODUCTION = DJANGO_ENV == "production"

DEV_SECRET_PREFIX = "dev-insecure-"  # noqa: S105 - a marker, not a secret


def _development_secret() -> str:
    """A random secret kept in .data/, so sessions survive a restart of the dev server."""
    path = DATA_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    value = DEV_SECRET_PREFIX + secrets.token_urlsafe(48)
    path.write_text(value)
    path.chmod(0o600)
    return value


DEBUG = env.bool("DEBUG", default=not PRODUCTION)
SECRET_KEY = env.str("SECRET_KEY", default="") or ("" if PRODUCTION else _development_secret())

if PRODUCTION:
    if not SECRET_KEY or SECRET_KEY.startswith(DEV_SECRET_PREFIX) or len(SECRET_KEY) < 32:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set to a random value of at least 32 characters in production"
        )
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must be off in production")

PUBLIC_DOMAIN = env.str("PUBLIC_DOMAIN", default="localhost")
# The port the development web listens on (platform/dev.sh's WEB_PORT): printed URLs and the
# trusted origins of the admin's forms follow it.
WEB_PORT = env.int("WEB_PORT", default=8000)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[PUBLIC_DOMAIN, f".{PUBLIC_DOMAIN}", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list(
    "CSRF_TRUSTED_ORIGINS",
    default=[f"http://{PUBLIC_DOMAIN}:{WEB_PORT}", f"http://*.{PUBLIC_DOMAIN}:{WEB_PORT}"],
)

# --- Databases -------------------------------------------------------------------------------
# DATABASE_URL is the app role: DML only, not the tables' owner, no BYPASSRLS.
# MIGRATION_DATABASE_URL is the owner role: it runs migrations and provisioning DDL.
DATABASE_URL = env.str(
    "DATABASE_URL", default="postgres://taskflow_app:taskflow_app@127.0.0.1:5432/taskflow"
)
MIGRATION_DATABASE_URL = env.str(
    "MIGRATION_DATABASE_URL",
    default="postgres://taskflow_owner:taskflow_owner@127.0.0.1:5432/taskflow",
)
_default_db = environ.Env.db_url_config(DATABASE_URL)
_default_db.update(
    # django-tenants' backend, with the tenant's search_path transaction-local, never a session
    # SET: Django's connection may go through PgBouncer's transaction pooling too.
    ENGINE="tenants.postgresql_backend",
    CONN_MAX_AGE=env.int("CONN_MAX_AGE", default=60),
    CONN_HEALTH_CHECKS=True,
    # Behind PgBouncer in transaction mode server-side cursors do not survive a transaction.
    DISABLE_SERVER_SIDE_CURSORS=True,
)
DATABASES = {"default": _default_db}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Tenancy ---------------------------------------------------------------------------------
TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
PUBLIC_SCHEMA_URLCONF = "control_plane.urls_public"
ROOT_URLCONF = "control_plane.urls_tenant"
TENANT_LIMIT_SET_CALLS = True
# django-tenants reads this on every request with a default; set, the lookup raises nothing.
HAS_MULTI_TYPE_TENANTS = False
# tenants.switches: read switches pinned to one value ({"tasks.due": "due_date"}); none here.
READ_SWITCH_PINS: dict[str, str] = {}

SHARED_APPS = [
    "django_tenants",
    "tenants",
    "control_plane",
    "control_plane.fanout",
    "control_plane.evolution",
    "control_plane.imports",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "taskflow",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

MIDDLEWARE = [
    # Outermost: the request id (echoed on every response), log context, access line, metrics,
    # and GET /metrics (control_plane.observability).
    "control_plane.observability.middleware.ObservationMiddleware",
    # Then: every error that leaves, whoever made it, is problem+json (the admin's pages aside).
    "control_plane.http.middleware.ProblemResponseMiddleware",
    "control_plane.ratelimits.headers.RateLimitHeadersMiddleware",
    "tenants.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files on every host, before tenant resolution: an asset never costs a tenant lookup.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "tenants.middleware.TenantMiddleware",
    "control_plane.observability.middleware.TenantLogContextMiddleware",
    "django.middleware.common.CommonMiddleware",
    "tenants.middleware.PublicHostMiddleware",
    "taskflow.versioning.ApiVersionMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, yet before URL dispatch and all of DRF: a warm token's plan limits (a 429 here costs
    # no authentication, view or renderer; the version and frame headers still apply).
    "control_plane.ratelimits.early.EarlyRateLimitMiddleware",
]
# Cache keys tenant resolution reads in its own round trip for the request (the bearer token's
# principal entry), so authentication sends no Redis GET of its own.
TENANT_RESOLUTION_READS_ALSO = "control_plane.identity.principals.keys_to_read_ahead"
# Makes that round trip, and charges a warm request's plan limits in it with the limits the early
# check worked out for the same keys, method and path, while the values they followed from are
# still what Redis holds (control_plane.ratelimits.prepaid).
TENANT_RESOLUTION_READER = "control_plane.ratelimits.prepaid.read"
# Run by PublicHostMiddleware on the public host (the admin) only, in this order: tenant hosts
# serve a bearer-token API that reads and sets no cookie.
PUBLIC_HOST_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
# The admin's checks look for these three in MIDDLEWARE, and `check --deploy` for CSRF's
# (security.W003); they run, through PublicHostMiddleware.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410", "security.W003"]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "control_plane.wsgi.application"
ASGI_APPLICATION = "control_plane.asgi.application"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
# Production serves what `collectstatic` wrote (the image runs it): names carry a content hash
# and each file has a compressed copy, so WhiteNoise can let clients cache them for a year.
# Elsewhere WhiteNoise reads the apps' static folders directly, as runserver does.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = not PRODUCTION

# --- Redis, cache, Celery --------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "control_plane.http.redis_cache.PooledClientRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="tf"),
        "TIMEOUT": 300,
        # A cache must fail fast: an unreachable or hung Redis costs a request at most these,
        # then the breaker skips Redis for its cool-down (control_plane.http.redis_cache).
        "OPTIONS": {
            "socket_connect_timeout": env.float("CACHE_CONNECT_TIMEOUT_SECONDS", default=0.25),
            "socket_timeout": env.float("CACHE_SOCKET_TIMEOUT_SECONDS", default=0.25),
        },
    }
}
CACHE_BREAKER_COOLDOWN_SECONDS = env.float("CACHE_BREAKER_COOLDOWN_SECONDS", default=5.0)
# How old this process's reading of the cache epoch may be before it reads it again: the longest
# a change made behind the ORM's back (QuerySet.update(), SQL) is served from cache (tenants.cache_epoch).
CACHE_EPOCH_CHECK_SECONDS = env.float("CACHE_EPOCH_CHECK_SECONDS", default=1.0)

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
# kombu's Redis transport with a worker that survives losing Redis mid-task (its docstring).
CELERY_BROKER_TRANSPORT = "control_plane.worker.broker:Transport"
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Keep a worker's Django connection between tasks (control_plane.worker.connections closes it
# only when old or broken); the fixup still recycles it after this many tasks.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    # How often a worker looks for a lost worker's unacknowledged messages to restore them.
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
    "unacked_restore_throttle": 1,
    # Submitting a job to an unreachable broker fails within seconds (503), never hangs a request.
    "socket_connect_timeout": env.float("CELERY_BROKER_CONNECT_TIMEOUT_SECONDS", default=1.0),
    "socket_timeout": env.float("CELERY_BROKER_SOCKET_TIMEOUT_SECONDS", default=5.0),
}
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECT_TIMEOUT_SECONDS", default=1.0)
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}

# --- REST framework --------------------------------------------------------------------------
REST_FRAMEWORK: dict[str, object] = {
    "DEFAULT_SCHEMA_CLASS": "control_plane.http.openapi.ContractSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "control_plane.identity.authentication.BearerTokenAuthentication"
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["control_plane.http.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["control_plane.http.renderers.FastJSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "control_plane.http.negotiation.FastContentNegotiation",
    "EXCEPTION_HANDLER": "control_plane.http.problems.problem_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["control_plane.ratelimits.throttles.TenantPlanThrottle"],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "TaskFlow API",
    "DESCRIPTION": (
        "The TaskFlow API of a tenant host (/api/v1) and the operator API of the public host "
        "(/ops/v1). Errors are application/problem+json (RFC 9457). Dated versions: "
        "see /api/v1/changelog."
    ),
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # `<id:...>` path parameters: bigint ids, bounded (control_plane.http.converters).
    "PATH_CONVERTER_OVERRIDES": {converters.NAME: converters.SCHEMA},
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True, "displayOperationId": True},
    # A PATCH body's serializer already makes every field optional.
    "COMPONENT_SPLIT_PATCH": False,
    "SERVE_INCLUDE_SCHEMA": False,
    # Several resources have a `status`, each with its own choices: one named enum each.
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "taskflow.openapi.TASK_STATUSES",
        "ImportStatusEnum": "control_plane.imports.models.ImportStatus",
        "ImportModeEnum": "control_plane.imports.models.ImportMode",
        "IsolationEnum": "tenants.models.Isolation",
        "TenantStatusEnum": "tenants.models.TenantStatus",
        "RunStatusEnum": "control_plane.fanout.models.RunStatus",
        "StepStatusEnum": "control_plane.fanout.models.StepStatus",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "taskflow.openapi.add_links",
        "taskflow.openapi.shared_headers",
    ],
}

# --- Rate limits and fair queues (protection from noisy neighbours) ---------------------------
# Off: no request is limited (benchmarks compare both). Redis unreachable: limits fail open.
RATE_LIMITS_ENABLED = env.bool("RATE_LIMITS_ENABLED", default=True)
# A quota is q requests per window, and also the largest burst (GCRA: a bucket of q refilled
# over the window), so a short window keeps bursts short: standard reads are 30/s, 300 at once.
RATE_LIMIT_WINDOW_SECONDS = env.int("RATE_LIMIT_WINDOW_SECONDS", default=10)
# Requests per window by plan and class (tenants.models.Plan); a tenant's rate_limits overrides.
RATE_LIMIT_PLANS: dict[str, dict[str, int]] = env.json(
    "RATE_LIMIT_PLANS",
    default={
        "free": {"reads": 50, "writes": 10, "imports": 1, "exports": 1},
        "standard": {"reads": 300, "writes": 100, "imports": 5, "exports": 5},
        "enterprise": {"reads": 2000, "writes": 500, "imports": 20, "exports": 20},
    },
)
RATE_LIMIT_DEFAULT_PLAN = "standard"
# The share of its tenant's quota one token may use.
RATE_LIMIT_TOKEN_SHARE = env.float("RATE_LIMIT_TOKEN_SHARE", default=0.5)
# Failed authentications per client address per window.
RATE_LIMIT_AUTH_FAILURES = env.int("RATE_LIMIT_AUTH_FAILURES", default=10)
# Behind a proxy that appends the client's address to X-Forwarded-For (and that clients cannot
# bypass), the last hop is the client; elsewhere REMOTE_ADDR is.
RATE_LIMIT_TRUST_FORWARDED_FOR = env.bool("RATE_LIMIT_TRUST_FORWARDED_FOR", default=False)
RATE_LIMIT_KEY_PREFIX = env.str("RATE_LIMIT_KEY_PREFIX", default="rl")
# Import jobs of one tenant that may run at once; the others wait their turn without holding a
# worker process (control_plane.worker.fairness). Keep below the imports workers' concurrency.
IMPORTS_PER_TENANT = env.int("IMPORTS_PER_TENANT", default=1)
# Onboardings one requester (an operator's token) may have provisioning at once.
ONBOARDINGS_PER_REQUESTER = env.int("ONBOARDINGS_PER_REQUESTER", default=1)
# How long a job waiting for its tenant's slot waits before asking again.
FAIR_QUEUE_RETRY_SECONDS = env.float("FAIR_QUEUE_RETRY_SECONDS", default=1.0)
# A job sent back again and again waits twice as long each time, up to this.
FAIR_QUEUE_MAX_RETRY_SECONDS = env.float("FAIR_QUEUE_MAX_RETRY_SECONDS", default=8.0)
# A bounce asks the database whether the owner's slot holders still run at most this often.
FAIR_QUEUE_HOLDER_CHECK_SECONDS = env.float("FAIR_QUEUE_HOLDER_CHECK_SECONDS", default=5.0)
# How long /readyz and the admin trust one reading of which queues have a worker.
QUEUE_CONSUMERS_CACHE_SECONDS = env.int("QUEUE_CONSUMERS_CACHE_SECONDS", default=15)
# /readyz's warnings: what an operator should know that does not make web unready (tenants.health).
READINESS_WARNINGS = ["control_plane.worker.readiness.readiness_warnings"]


# --- Observability (control_plane.observability) ----------------------------------------------
# One line per record, rendered by structlog: JSON for machines (production's default), or for a
# human (development's). Secrets are redacted from every line.
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION else "console")
if LOG_FORMAT not in {"json", "console"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or console, not {LOG_FORMAT!r}")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# One line per request (method, route, status, duration, tenant, user, request id).
ACCESS_LOG = env.bool("ACCESS_LOG", default=True)
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
configure_structlog(log_format=LOG_FORMAT, level=LOG_LEVEL)
# Keep this LOGGING in workers and beat: Celery would otherwise replace the root logger's handlers.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Prometheus metrics. Off: nothing is recorded and /metrics is 404 (the overhead benchmark's
# baseline). GET /metrics needs `Authorization: Bearer METRICS_TOKEN`; no token, no endpoint.
METRICS_ENABLED = env.bool("METRICS_ENABLED", default=True)
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_PATH = env.str("METRICS_PATH", default="/metrics")
# Only the busiest K tenants of a process get a label of their own; the others are "other".
METRICS_TENANT_TOP_K = env.int("METRICS_TENANT_TOP_K", default=20)
METRICS_TENANT_REFRESH_SECONDS = env.float("METRICS_TENANT_REFRESH_SECONDS", default=60.0)
# A Celery worker's own exporter (same token): 0 is none.
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
METRICS_BIND_ADDRESS = env.str("METRICS_BIND_ADDRESS", default="127.0.0.1")
# OpenTelemetry traces: off unless an exporter is named (otlp, console) or an OTLP endpoint set.
TRACING_EXPORTER = env.str(
    "TRACING_EXPORTER", default="otlp" if env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="") else ""
)
if TRACING_EXPORTER not in {"", "otlp", "console"}:
    raise ImproperlyConfigured(
        f"TRACING_EXPORTER must be otlp or console, not {TRACING_EXPORTER!r}"
    )

if PRODUCTION:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)

# Behind a proxy that terminates TLS and sets X-Forwarded-Proto (and strips it from clients):
# plain-HTTP requests are redirected to HTTPS and browsers are told to stay on HTTPS, tenant
# subdomains included. Off, `check --deploy` reports exactly these settings (security.W004, W008).
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)

# --- TaskFlow data layer -----------------------------------------------------------------------
TASKFLOW_POOL_SIZE = env.int("TASKFLOW_POOL_SIZE", default=5)
TASKFLOW_POOL_OVERFLOW = env.int("TASKFLOW_POOL_OVERFLOW", default=10)
DATABASE_BEHIND_PGBOUNCER = env.bool("DATABASE_BEHIND_PGBOUNCER", default=False)
# A pooled connection that has served this many tenant schemas is replaced at its next checkout:
# a PostgreSQL backend keeps the catalog entries of every relation it touched (relcache,
# catcache) for its whole life, so one connection serving thousands of schemas grows without
# bound (tests/benchmarks/bench_scale.py). 0 turns recycling off. Behind PgBouncer the server
# connections it keeps need the same bound: set its server_lifetime (platform/pgbouncer).
TASKFLOW_POOL_RECYCLE_SCHEMAS = env.int("TASKFLOW_POOL_RECYCLE_SCHEMAS", default=100)
# How long a write waits for a tenant being moved between placements before it gets a 503.
TENANT_WRITE_LOCK_TIMEOUT_MS = env.int("TENANT_WRITE_LOCK_TIMEOUT_MS", default=3000)
# How long a move waits for in-flight writes of the tenant before giving up.
TENANT_MOVE_LOCK_TIMEOUT_MS = env.int("TENANT_MOVE_LOCK_TIMEOUT_MS", default=10000)
# Template clones kept ready for onboarding (0 turns spares off: every onboarding clones).
SPARE_SCHEMAS = env.int("SPARE_SCHEMAS", default=3)
# On a Citus coordinator: distribute each schema tenant's schema at onboarding
# (citus_schema_distribute), its history triggers pointed at the Citus-mode history function
# (tenants.distribution). Off by default (README, "Citus"); nothing changes on plain PostgreSQL.
CITUS_DISTRIBUTE_SCHEMAS = env.bool("CITUS_DISTRIBUTE_SCHEMAS", default=False)
# On a Citus coordinator: setup_platform distributes the shared schema's tables by tenant_id,
# colocated (tenants.distribution.distribute_shared_tables). Off by default (README, "Citus").
CITUS_DISTRIBUTE_SHARED = env.bool("CITUS_DISTRIBUTE_SHARED", default=False)
OWNER_POOL_SIZE = env.int("OWNER_POOL_SIZE", default=4)
# An owner connection is replaced after this many uses (each one creates or touches a schema):
# a backend that has made thousands of schemas keeps their catalog entries and runs every clone
# several times slower (tests/benchmarks/bench_scale.py). 0 keeps connections for good.
OWNER_POOL_RECYCLE_USES = env.int("OWNER_POOL_RECYCLE_USES", default=100)
# How long a retried onboarding (same Idempotency-Key) may show the owner's token again; it is
# kept sealed in Redis until then, and later replays answer without it.
ONBOARDING_TOKEN_REPLAY_SECONDS = env.int("ONBOARDING_TOKEN_REPLAY_SECONDS", default=600)
# How long provisioning waits for an owner connection (the server may be restarting) before the
# attempt fails as a lost connection, which the task retries.
OWNER_POOL_TIMEOUT_SECONDS = env.float("OWNER_POOL_TIMEOUT_SECONDS", default=30.0)
SOFT_DELETE_RETENTION_DAYS = env.int("SOFT_DELETE_RETENTION_DAYS", default=30)

# --- Migration fan-out -------------------------------------------------------------------------
# Another Alembic script directory for runs to apply (tests and benchmarks); empty: migrations_sqla.
FANOUT_SCRIPT_LOCATION = env.str("FANOUT_SCRIPT_LOCATION", default="")
# An unfinished run with no activity for this long (and at least twice its statement_timeout)
# has lost its messages (a broker restart, say): the beat's reaper sends them again.
FANOUT_STUCK_AFTER_S = env.int("FANOUT_STUCK_AFTER_S", default=600)
# A batch lane replaces its owner connection after migrating this many schemas: one backend
# keeps the catalog entries of every schema it touched, so a lane spread over thousands of
# schemas grows without bound (as TASKFLOW_POOL_RECYCLE_SCHEMAS for the web). 0 turns it off.
FANOUT_RECYCLE_SCHEMAS = env.int("FANOUT_RECYCLE_SCHEMAS", default=100)

# --- Recovery of stranded jobs (control_plane.worker.recovery) ---------------------------------
# Beat's sweep for jobs whose message was lost or whose worker died (read by control_plane.celery
# from the environment too: the schedule is built before settings).
RECOVERY_INTERVAL_SECONDS = env.float("RECOVERY_INTERVAL_SECONDS", default=5.0)
# How long a sent message is trusted to be waiting in the broker; past it, an unstarted job is
# sent again (a duplicate finds its job done or leased and does nothing).
RECOVERY_MESSAGE_GRACE_SECONDS = env.float("RECOVERY_MESSAGE_GRACE_SECONDS", default=45.0)
# A worker's lease on the job it runs, renewed every second: how soon a dead worker is noticed.
LEASE_SECONDS = env.float("LEASE_SECONDS", default=5.0)
