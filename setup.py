"""The optional compiled paths (mmcache/_native/: the get, the decorator's key).

Everything else is in pyproject.toml. ``optional=True``: where no C compiler
or no Python headers exist the build of these extensions fails with a
warning and the install goes on; mmcache then runs pure Python (and says so
once, at import). ``MMCACHE_CFLAGS`` adds compiler flags (``make test-asan``
builds with AddressSanitizer that way).
"""

import os

from setuptools import Extension, setup

extra = os.environ.get("MMCACHE_CFLAGS", "").split()

setup(
    ext_modules=[
        Extension(
            "mmcache._native._speedups",
            sources=[
                f"mmcache/_native/{n}.c" for n in ("_speedups", "_write", "_wstate", "_delete", "_compact")
            ],
            depends=[
                f"mmcache/_native/{n}.h"
                for n in ("xxh3", "format", "probe", "_write", "_write_int", "fuzz_stubs")
            ],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", *extra],
            extra_link_args=[f for f in extra if f.startswith("-fsanitize")],
            optional=True,
        ),
        # The decorator's key and hit path (mmcache/decorators/_argkey.py and cached.py use it).
        Extension(
            "mmcache._native._decorator",
            sources=["mmcache/_native/_decorator.c"],
            depends=[f"mmcache/_native/{n}.h" for n in ("argenc", "xxh3", "fuzz_stubs")],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", *extra],
            extra_link_args=[f for f in extra if f.startswith("-fsanitize")],
            optional=True,
        ),
    ]
)
