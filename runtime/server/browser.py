"""The browser policy (ASGI middleware): a web page the user visits must not use the server through the
user's browser.

- **Host** (DNS rebinding: a page whose name is made to resolve to 127.0.0.1 talks to the server as
  itself): a request is answered only when its ``Host`` names the server: a name in ``hosts`` (``dagnn
  serve`` gives its ``--host`` value, for a loopback bind also ``localhost``, ``127.0.0.1`` and ``::1``,
  and each ``--allowed-host``), or the address literal the connection came to (an IP typed in the address
  bar: a rebinding page always sends its own name). Any port is accepted: an ``ssh -L`` tunnel or a proxy
  changes the port, never the name. Any other ``Host`` gets 421 with a one-line error. ``hosts`` holding
  ``*`` turns the check off (behind a proxy that checks names itself). A request without ``Host``
  (HTTP/1.0) comes from no browser and passes. ``/healthz`` and ``/readyz`` skip the check: they change
  nothing, say only up or ready, and probes call them by whatever address they have.
- **Writes** (cross-site request forgery: any page can make the browser send a "simple" multipart POST):
  a request that can change the index (any method but GET, HEAD and OPTIONS, except ``POST /v1/search``
  and ``POST /v1/tag``, which only read; new routes are writes until listed here) is refused with 403
  when its ``Origin`` is present and is neither the server's own origin (scheme and ``Host`` the request
  came with) nor one of ``cors_origins``, or when ``Sec-Fetch-Site`` is present and is not
  ``same-origin`` or ``none`` (for an origin in ``cors_origins``, its ``Origin`` is what counts). Clients
  that send neither header (curl, apps, scripts) pass; the search page sends its own origin. This holds
  with or without an API key.
- **CORS** stays off (browsers keep other origins from reading answers) unless ``cors_origins`` is given:
  then starlette's ``CORSMiddleware`` answers those origins only (``cors``).
"""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from .errors import error_response, shorten

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
READ_ONLY_POSTS = {"/v1/search", "/v1/tag"}
PROBES = {"/healthz", "/readyz"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bound_names(host: str, allowed=()) -> list:
    """The Host names a server bound to ``host`` answers: ``host`` itself, the loopback names for a loopback
    bind, and ``allowed`` (``--allowed-host``)."""
    names = [host] + (list(LOOPBACK_NAMES) if is_loopback(host) else []) + list(allowed)
    return list(dict.fromkeys(host_name(n) or n for n in names))


def host_name(value: str) -> str | None:
    """The name of a ``Host`` value (``name``, ``name:port``, ``[v6]:port``): lower case, without the port, the
    brackets and a final dot, an address in its usual form; None when it is not one."""
    value = value.strip()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    elif value.count(":") > 1:  # a bare IPv6 address (not a Host value, but a --host one)
        name = value
    else:
        name, _, port = value.partition(":")
        if _ and not port.isdigit():
            return None
    name = name.lower().rstrip(".")
    address = _address(name)
    if address is not None:
        return str(address)
    return name if _NAME.fullmatch(name) else None


def check_host_option(value: str) -> str:
    """``--allowed-host NAME``: a host name or address (no scheme, path or port), or ``*``."""
    if value == "*":
        return value
    name = host_name(value)
    if name is None or (":" in value and _address(value.strip("[]")) is None):
        raise ValueError(f"--allowed-host {shorten(value)!r} is not a host name or address without a port "
                         "(e.g. photos.lan)")
    return name


def check_origin_option(value: str) -> str:
    """``--cors-origin ORIGIN``: ``scheme://host[:port]`` as browsers send it (no path), or ``*``."""
    if value == "*":
        return value
    origin = _origin(value)
    if origin is None or value.rstrip("/") != value or urlsplit(value).path:
        raise ValueError(f"--cors-origin {shorten(value)!r} is not an origin like https://app.example:8443")
    return value


def _origin(value: str, default_scheme: str | None = None):
    """``(scheme, name, port)`` of an origin or of ``scheme`` + a Host value; None when malformed."""
    try:
        parts = urlsplit(value if default_scheme is None else f"{default_scheme}://{value}")
        scheme, name, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not name or parts.username or parts.password or parts.query or \
            parts.fragment or (parts.path and default_scheme is None):
        return None
    return scheme, name.rstrip("."), port or _DEFAULT_PORTS[scheme]


class BrowserPolicy:
    """ASGI middleware: the Host and write checks of the module docstring."""

    def __init__(self, app, hosts=LOOPBACK_NAMES, cors_origins=()):
        self.app = app
        self.any_host = "*" in hosts
        self.hosts = {host_name(h) or h for h in hosts}
        self.any_origin = "*" in cors_origins
        self.cors = {_origin(o) for o in cors_origins if o != "*"}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for name, value in scope.get("headers", ()):
            if name in (b"host", b"origin", b"sec-fetch-site"):
                headers.setdefault(name, value.decode("latin-1"))
        host = headers.get(b"host")
        if host is not None and scope["path"] not in PROBES and not self._host_ok(host, scope):
            return await error_response(421, "misdirected", f"Host {shorten(host)!r} is not a name of this server "
                                        "(start it with --allowed-host NAME to answer that name)")(
                scope, receive, send)
        if self._is_write(scope):
            refusal = self._write_refusal(scope, host, headers.get(b"origin"), headers.get(b"sec-fetch-site"))
            if refusal:
                return await error_response(403, "forbidden", refusal)(scope, receive, send)
        return await self.app(scope, receive, send)

    def _host_ok(self, host: str, scope) -> bool:
        if self.any_host:
            return True
        name = host_name(host)
        if name is None:
            return False
        if name in self.hosts:
            return True
        server = scope.get("server")  # the address the connection came to: an IP literal is never rebound
        return bool(server) and _address(name) is not None and _same_address(_address(name), _address(server[0]))

    @staticmethod
    def _is_write(scope) -> bool:
        method = scope["method"]
        return method not in SAFE_METHODS and not (method == "POST" and scope["path"] in READ_ONLY_POSTS)

    def _write_refusal(self, scope, host, origin, site) -> str | None:
        if origin is not None:
            parsed = _origin(origin)
            if parsed is not None and (self.any_origin or parsed in self.cors):
                return None  # a configured CORS origin: its page may write (with the key, when one is set)
            own = _origin(host, scope.get("scheme", "http")) if host else None
            if parsed is None or own is None or parsed != own:
                return (f"a page of another origin ({shorten(origin)}) may not change this server's index "
                        "(start it with --cors-origin ORIGIN to allow one)")
        if site is not None and site.strip().lower() not in ("same-origin", "none"):
            return (f"a page of another site (Sec-Fetch-Site: {shorten(site)}) may not change this server's "
                    "index (start it with --cors-origin ORIGIN to allow one)")
        return None


def _address(value: str):
    try:
        return ipaddress.ip_address(value.strip("[]").split("%")[0])
    except ValueError:
        return None


def _same_address(a, b) -> bool:
    """Whether two addresses are one (an IPv4 address and its IPv4-mapped IPv6 form are)."""
    def v4(x):
        return getattr(x, "ipv4_mapped", None) or x
    return a is not None and b is not None and v4(a) == v4(b)


def cors(app, origins):
    """starlette's CORSMiddleware for ``origins`` only: the API's methods and headers, no cookies."""
    from starlette.middleware.cors import CORSMiddleware

    return CORSMiddleware(app, allow_origins=list(origins), allow_methods=["GET", "POST", "DELETE"],
                          allow_headers=["Authorization", "Content-Type"], expose_headers=["Retry-After"],
                          allow_credentials=False, max_age=600)
