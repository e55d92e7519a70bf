"""Logging in to NATS: nats-py's connect options from NatsAccess, and secrets kept out of messages.

A credentials file is nats-py's `user_credentials`, an NKey seed file its `nkeys_seed`, a token
its `token`; a user and password (or a token) in the URLs become its `user` and `password` (or
`token`), taken out of the URLs: nats-py sends a URL's login only to that URL's server, never to
the nodes it learns of from the cluster (INFO `connect_urls`), so a gateway given one node's URL
could not log in anywhere once that node was lost. The TLS context verifies the
servers against `tls_ca` (else the system's CAs) and presents `tls_cert` when given; a
`tls://` URL, or a server that requires TLS, uses it. Every text that may reach a log or an
error passes `Redactor.scrub`, which replaces the token and the URLs' passwords.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

from nats.errors import AuthorizationError, InvalidUserCredentialsError

from logserver.engine import EngineError

from .settings import JetStreamSettings, NatsAccess

HIDDEN = "***"
# What no retry can change: the servers refused this gateway's credentials or certificates.
REFUSALS: tuple[type[Exception], ...] = (AuthorizationError, InvalidUserCredentialsError, ssl.SSLError)
AUTHENTICATION_TEXTS = ("authorization violation", "authentication")


class NatsLoginRefused(EngineError):
    """The NATS servers refused this gateway's login or TLS handshake, or its login files are
    unreadable: a setting to fix, not a fault to wait out."""


def check_files(access: NatsAccess) -> None:
    """NatsLoginRefused naming the option whose file cannot be read (before any connect)."""
    for flag, path in (
        ("--nats-creds", access.credentials_file),
        ("--nats-nkey", access.nkey_seed_file),
        ("--nats-tls-ca", access.tls_ca),
        ("--nats-tls-cert", access.tls_cert),
        ("--nats-tls-key", access.tls_key),
    ):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise NatsLoginRefused(f"{flag} {path}: {exc.strerror or exc}") from None


def tls_context(access: NatsAccess) -> ssl.SSLContext | None:
    """The client TLS context, or None when no TLS file is given (nats-py then uses its default
    for a `tls://` URL). Raises OSError (ssl.SSLError is one) for an unreadable file."""
    if access.tls_ca is None and access.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=access.tls_ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if access.tls_cert is not None:
        context.load_cert_chain(access.tls_cert, access.tls_key)
    return context


def url_login(servers: list[str]) -> tuple[list[str], dict[str, str]]:
    """The server URLs without their logins, and the one login they carry as nats-py options
    (`user` and `password`, or `token`); NatsLoginRefused when two URLs carry different ones."""
    logins = {login for login in map(_login_of, servers) if login is not None}
    if len(logins) > 1:
        raise NatsLoginRefused(
            "the NATS server URLs carry different logins: the gateway logs in to every node "
            "of the cluster with one (give it in every URL, or in one)"
        )
    login: tuple[str, ...] = logins.pop() if logins else ()
    names = ("token",) if len(login) == 1 else ("user", "password")  # none: no options
    return [_without_login(url) for url in servers], dict(zip(names, login, strict=False))


def _login_of(url: str) -> tuple[str, ...] | None:
    """(user, password), (token,) or None: a URL's login, percent-decoded as URLs encode it."""
    parts = urlsplit(url)
    if parts.username is None:
        return None
    if parts.password is None:
        return (unquote(parts.username),)
    return unquote(parts.username), unquote(parts.password)


def _without_login(url: str) -> str:
    """A URL with its user, password or token left out."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def connect_options(
    access: NatsAccess, tls: ssl.SSLContext | None, url_options: dict[str, str]
) -> dict[str, Any]:
    """nats.connect's keyword arguments for the login and TLS settings that are given (the
    URLs' login, `url_options` of url_login, unless an option gives another)."""
    given = (access.credentials_file, access.nkey_seed_file, access.token)
    options: dict[str, Any] = dict(url_options) if all(value is None for value in given) else {}
    if access.credentials_file is not None:
        options["user_credentials"] = str(access.credentials_file)
    if access.nkey_seed_file is not None:
        options["nkeys_seed"] = str(access.nkey_seed_file)
    if access.token is not None:
        options["token"] = access.token
    if tls is not None:
        options["tls"] = tls
    return options


def is_refusal(exc: BaseException) -> bool:
    """Whether a connect error is the servers refusing the credentials or the TLS handshake."""
    if isinstance(exc, REFUSALS):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in AUTHENTICATION_TEXTS)


class Redactor:
    """The secrets of one settings (the token, each URL's password or token) and their removal.

    Immutable once built; safe to share.
    """

    def __init__(self, settings: JetStreamSettings) -> None:
        self._servers = settings.servers
        found = [settings.access.token] if settings.access.token else []
        for url in settings.servers:
            parts = urlsplit(url)
            secret = parts.password if parts.password is not None else parts.username  # a URL token
            if secret:
                found += [secret, unquote(secret)]
        self._secrets = sorted(set(found), key=len, reverse=True)  # a longer one first: no leftover

    def scrub(self, text: str) -> str:
        """`text` with every secret replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, HIDDEN)
        return text

    def urls(self) -> str:
        """The server URLs, comma-separated, without their passwords or tokens."""
        return ",".join(_without_password(url) for url in self._servers)


def _without_password(url: str) -> str:
    """A URL with its password, or a token in its user part, replaced by ***."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    login = HIDDEN if parts.password is None else f"{parts.username}:{HIDDEN}"
    return parts._replace(netloc=f"{login}@{host}").geturl()
