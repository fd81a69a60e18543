"""Drive m365sim's Microsoft sign-in, MFA and consent pages over HTTP, as a person would."""

from __future__ import annotations

from urllib.parse import urljoin

import httpx

from tests.postroom.webtools import forms, post_form


def through_microsoft(
    client: httpx.Client,
    start: httpx.Response,
    *,
    back_to: str,
    username: str,
    password: str,
    consent: str = "accept",
    mfa_code: str | None = None,
) -> str:
    """Follow ``start`` (a redirect to Microsoft) through the pages; return the URL Microsoft
    sends the browser back to (under ``back_to``), without requesting it."""
    response = start
    for _ in range(12):
        if response.status_code in (301, 302, 303, 307):
            location = urljoin(str(response.request.url), response.headers["location"])
            if location.startswith(back_to):
                return location
            response = client.get(location)
            continue
        assert response.status_code == 200, (response.status_code, response.text[:500])
        page_forms = forms(response.text)
        assert page_forms, response.text[:500]
        form = page_forms[0]
        action = urljoin(str(response.request.url), str(form["action"]))
        fields = dict(form["fields"])  # type: ignore[arg-type]
        if action.startswith(back_to):  # response_mode=form_post
            raise AssertionError("form_post is not used by Postroom")
        if action.endswith("/login"):
            fields.update(login=username, passwd=password)
        elif action.endswith("/mfa"):
            fields["otc"] = mfa_code or ""
        elif action.endswith("/consent"):
            fields["action"] = consent
        elif "choice" in response.text:
            fields["choice"] = "session"
        response = client.post(action, data=fields)
    raise AssertionError("too many pages at Microsoft")


def reconnect(
    client: httpx.Client, base: str, *, back_to: str, username: str, password: str
) -> None:
    """Reconnect the integration at ``base`` as a person would: the button on its page, the
    Microsoft sign-in, and back to Postroom (which answers with a redirect)."""
    start = post_form(client, base, f"{base}/reconnect")
    back = through_microsoft(client, start, back_to=back_to, username=username, password=password)
    assert client.get(back).status_code == 303
