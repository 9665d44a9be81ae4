"""What import-linter cannot show: the layout and app registry follow the design."""

from __future__ import annotations

import importlib
import subprocess
import sys
import sysconfig
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
LOCAL_APPS = (
    "tenants",
    "control_plane",
    "control_plane.fanout",
    "control_plane.imports",
    "taskflow",
)
# The top level of control_plane is the project; each domain has a package (identity, tenancy,
# http, worker, fanout, imports).
CONTROL_PLANE_PROJECT_MODULES = {
    "__init__.py", "admin.py", "apps.py", "asgi.py", "celery.py", "models.py", "settings.py",
    "urls_public.py", "urls_tenant.py", "wsgi.py",
}  # fmt: skip


def test_import_platform_is_the_standard_library_module() -> None:
    # A fresh interpreter started in the repository root, as manage.py, celery and gunicorn are.
    out = subprocess.run(
        [sys.executable, "-c", "import platform, uuid; print(platform.__file__); print(platform.system())"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(out[0]).resolve().parent == stdlib
    assert out[1]  # platform.system() works: the real module, not our ops folder
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_every_local_app_is_in_exactly_one_of_shared_and_tenant_apps() -> None:
    for app in LOCAL_APPS:
        placements = (app in settings.SHARED_APPS) + (app in settings.TENANT_APPS)
        assert placements == 1, f"{app} is in {placements} of SHARED_APPS/TENANT_APPS"


def test_tenancy_and_product_packages_do_not_import_the_control_plane() -> None:
    for package in ("tenants", "taskflow", "migrations_sqla"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            assert "import control_plane" not in text, path
            assert "from control_plane" not in text, path


def test_local_packages_import() -> None:
    for app in (*LOCAL_APPS, "migrations_sqla"):
        assert importlib.import_module(app)


def test_the_control_plane_top_level_holds_only_the_project() -> None:
    modules = {path.name for path in (ROOT / "control_plane").glob("*.py")}
    assert modules <= CONTROL_PLANE_PROJECT_MODULES, "a domain's module belongs in its package"
