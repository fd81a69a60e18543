"""Input no page accepts: the NUL character.

PostgreSQL cannot store NUL in text, so a NUL in any form field, query parameter or path
segment used to end as an error deep in a service (a 500, its SQL parameters in the log) or,
in a JSON column, as a value no one can type. No legitimate input holds one. This dependency
of every route refuses such a request before its view runs, with the page every unreadable
field gets: 400, the fields named, nothing changed.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError

NUL = "\x00"
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


async def refuse_nul(request: Request) -> None:
    bad = [("query", k) for k, v in request.query_params.multi_items() if NUL in k + v]
    bad += [("path", k) for k, v in request.path_params.items() if isinstance(v, str) and NUL in v]
    content_type = request.headers.get("content-type", "")
    # The webhook reads its JSON body itself, with a size bound: never parse it as a form.
    if content_type.startswith(FORMS) and not request.url.path.startswith("/webhooks/"):
        # parsed once: the view (or FastAPI's Form parameters) reads the same cached form
        form = await request.form()
        bad += [
            ("body", k)
            for k, v in form.multi_items()
            if NUL in k or (isinstance(v, str) and NUL in v)
        ]
    if bad:
        raise RequestValidationError(
            [
                {
                    "loc": (where, name.replace(NUL, "")[:40]),
                    "msg": "may not contain the NUL character",
                    "type": "value_error",
                }
                for where, name in bad
            ]
        )
