"""What a NATS operator hands a client, made here without `nsc`: NKeys, signed JWTs, a creds
file, and a CA with server and client certificates (the `openssl` CLI)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import nkeys


class NKey:
    """One NKey pair of a role (operator, account, user), from a fresh random seed."""

    def __init__(self, prefix: int) -> None:
        self.seed: bytes = nkeys.encode_seed(os.urandom(32), prefix)
        self._pair = nkeys.from_seed(bytearray(self.seed))
        self.public: str = self._pair.public_key.decode()

    def sign(self, data: bytes) -> bytes:
        signature: bytes = self._pair.sign(data)
        return signature


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer: NKey, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (alg ed25519-nkey) of these claims, signed by `issuer`, as nsc writes one."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject}
    claims["nats"] = nats
    digest = hashlib.new("sha512_256", json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    payload = _b64(json.dumps(claims).encode())
    signature = _b64(issuer.sign(f"{header}.{payload}".encode()))
    return f"{header}.{payload}.{signature}"


def operator_setup(directory: Path) -> tuple[str, Path]:
    """An operator, a system account (JetStream needs one), an account with JetStream and a user
    of it: the server's config block (resolver MEMORY, the accounts' JWTs preloaded) and the
    user's creds file."""
    operator = NKey(nkeys.PREFIX_BYTE_OPERATOR)
    system = NKey(nkeys.PREFIX_BYTE_ACCOUNT)
    account = NKey(nkeys.PREFIX_BYTE_ACCOUNT)
    user = NKey(nkeys.PREFIX_BYTE_USER)
    unlimited = {"subs": -1, "data": -1, "payload": -1}
    operator_jwt = jwt(operator, operator.public, "test-operator", {"type": "operator", "version": 2})
    account_limits = {
        **unlimited,
        "imports": -1,
        "exports": -1,
        "wildcards": True,
        "conn": -1,
        "leaf": -1,
        "mem_storage": -1,
        "disk_storage": -1,
        "streams": -1,
        "consumer": -1,
    }
    account_jwt = jwt(
        operator,
        account.public,
        "test-account",
        {
            "limits": account_limits,
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        },
    )
    system_limits = {**unlimited, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
    system_jwt = jwt(
        operator, system.public, "SYS", {"limits": system_limits, "type": "account", "version": 2}
    )
    user_jwt = jwt(
        account, user.public, "gateway", {"pub": {}, "sub": {}, **unlimited, "type": "user", "version": 2}
    )
    creds = directory / "gateway.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    preload = f"resolver_preload: {{ {account.public}: {account_jwt}, {system.public}: {system_jwt} }}"
    block = f"operator: {operator_jwt}\nsystem_account: {system.public}\nresolver: MEMORY\n{preload}\n"
    return block, creds


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def certificate(directory: Path, name: str, usage: str) -> None:
    """`name`.pem and `name`-key.pem, signed by the CA in `directory`, for 127.0.0.1/localhost."""
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        f"extendedKeyUsage={usage}\n"
        "keyUsage=critical,digitalSignature\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectKeyIdentifier=hash\n"
    )
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}-key.pem", cwd=directory)
    openssl(
        "req", "-new", "-key", f"{name}-key.pem", "-subj", f"/CN={name}", "-out", f"{name}.csr", cwd=directory
    )
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
        "-days", "1", "-extfile", str(extensions), "-out", f"{name}.pem",
        cwd=directory,
    )  # fmt: skip


def certificate_authority(directory: Path) -> None:
    """ca.pem (a self-signed CA), server.pem (serverAuth) and client.pem (clientAuth) with keys."""
    directory.mkdir(parents=True, exist_ok=True)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca-key.pem", cwd=directory)
    openssl(
        "req", "-x509", "-new", "-key", "ca-key.pem", "-subj", "/CN=logserver test CA", "-days", "1",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash", "-out", "ca.pem",
        cwd=directory,
    )  # fmt: skip
    certificate(directory, "server", "serverAuth")
    certificate(directory, "client", "clientAuth")
