"""Tag every response with the pid of the worker that served it.

Runs outside the cache: a page that ``cache_page`` stored in worker A and
served from the cache by worker B says "rendered by A" in its body and
``X-Served-By: B`` in its headers.
"""

import os
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


def served_by(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response["X-Served-By"] = str(os.getpid())
        return response

    return middleware
