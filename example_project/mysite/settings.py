"""Settings of the example site: no database, one mmcache-backed cache.

Every worker process (``gunicorn -w 4``) opens the same LOCATION, so what one
worker caches is a hit in the others. The cache directory comes from
``MMCACHE_EXAMPLE_CACHE_DIR`` (the demo and the tests set it to a temporary
directory); by default it is a per-user directory under the system's temp dir.
"""

import os
import sys
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# The example runs from a checkout: make the mmcache package importable
# without installing it (a no-op when it is installed).
REPO_ROOT = str(BASE_DIR.parent)
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

CACHE_DIR = os.environ.get("MMCACHE_EXAMPLE_CACHE_DIR") or os.path.join(
    tempfile.gettempdir(), f"mmcache-example-{os.getuid()}"
)

CACHES = {
    "default": {
        "BACKEND": "mmcache.contrib.django.MmapCacheBackend",
        "LOCATION": os.path.join(CACHE_DIR, "django"),
        "TIMEOUT": 300,
        "OPTIONS": {"MAX_ENTRIES": 10_000, "CULL_FREQUENCY": 3},
    }
}

INSTALLED_APPS = [
    "mmcache.contrib.django",  # system checks + `manage.py mmcache stats|clear|verify`
    "demo",
]
MIDDLEWARE = ["demo.middleware.served_by"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    }
]
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
