"""Kubernetes object names: what the API server accepts, checked where a user gives one
(a flag, a ConfigMap reference) so the mistake is named there, not in a refused write."""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_FORMS = {
    "label": (re.compile(rf"^{_LABEL}$", re.ASCII), 63, "a DNS-1123 label"),
    "subdomain": (re.compile(rf"^{_LABEL}(\.{_LABEL})*$", re.ASCII), 253, "a DNS-1123 subdomain"),
}


def name_problem(text: str, form: str) -> str | None:
    """Why `text` is not a name of `form` ("label": a namespace; "subdomain": most
    objects' names, and a pod's schedulerName), or None when it is one."""
    pattern, most, what = _FORMS[form]
    if len(text) <= most and pattern.fullmatch(text):
        return None
    dots = ", '.' between parts" if form == "subdomain" else ""
    return (
        f"{text!r} is not {what} (lower-case letters, digits and '-'{dots}, starting and "
        f"ending with a letter or digit, at most {most} characters)"
    )
