"""Can this address be reached? The answer, in the words a user can act on, tells apart three
failures: no network at all, this host cannot be reached, and this host answered with an error."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from . import APP_NAME

# The registry the installer needs anyway: when it answers, the network is up.
REFERENCE_URL = "https://pypi.org/simple/pip/"
PROBE_TIMEOUT = 10.0

NO_NETWORK, UNREACHABLE, HTTP_ERROR = "no network", "unreachable", "http error"


@dataclass(frozen=True)
class Reach:
    """What probing `url` found: `problem` is None when it answered, else NO_NETWORK,
    UNREACHABLE or HTTP_ERROR, with the cause in `detail`."""

    url: str
    problem: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or self.url

    def describe(self) -> str:
        if self.problem is None:
            return f"{self.host} answered"
        if self.problem == NO_NETWORK:
            return f"no network at all ({self.detail})"
        if self.problem == HTTP_ERROR:
            return f"{self.host} answered with an error ({self.detail})"
        return f"{self.host} cannot be reached ({self.detail})"


def failure_detail(error: BaseException, timeout: float) -> str:
    """The cause of a failed request in a few words: the lookup, the refusal, the silence."""
    reason = getattr(error, "reason", error)
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}".rstrip()
    if isinstance(reason, socket.gaierror):
        return "its name could not be looked up"
    if isinstance(reason, ConnectionRefusedError):
        return "it refused the connection"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    return str(reason) or type(reason).__name__


def _request(url: str, timeout: float) -> None:
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": f"{APP_NAME}-installer"})
    with urllib.request.urlopen(request, timeout=timeout):
        pass


def _answers(url: str, timeout: float) -> Reach:
    try:
        _request(url, timeout)
    except urllib.error.HTTPError as error:
        # Some hosts refuse HEAD (405) while serving GET; any status below 400 but that one means up.
        if error.code == 405:
            return Reach(url)
        return Reach(url, HTTP_ERROR, failure_detail(error, timeout))
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        return Reach(url, UNREACHABLE, failure_detail(error, timeout))
    return Reach(url)


def probe(url: str, *, timeout: float = PROBE_TIMEOUT, reference: str | None = REFERENCE_URL) -> Reach:
    """Ask `url` once. When it cannot be reached, `reference` (PyPI) is asked too: if that fails
    the same way, the machine has no network at all rather than one host being down."""
    found = _answers(url, timeout)
    if found.problem != UNREACHABLE or reference is None:
        return found
    if _answers(reference, timeout).problem == UNREACHABLE:
        return Reach(url, NO_NETWORK, found.detail)
    return found
