"""Certificates made in the test with the openssl CLI (the `cryptography` package is not
installed): a CA, server certificates for localhost / 127.0.0.1 (valid or expired), client ones."""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from pathlib import Path

_SERIAL = itertools.count(1000)
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_ca(directory: Path, name: str) -> Pair:
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        "req", "-x509", *_KEY, "-keyout", str(pair.key), "-out", str(pair.cert),
        "-subj", f"/CN={name}", "-days", "2",
    )  # fmt: skip
    return pair


def make_cert(
    directory: Path, name: str, ca: Pair, *, expired: bool = False, client: bool = False
) -> Pair:
    """Signed by `ca`; a server certificate names localhost and 127.0.0.1. `expired`: its
    notAfter is a day before now."""
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    request = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    usage = "clientAuth" if client else "serverAuth"
    san = "" if client else "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    extensions.write_text(f"{san}extendedKeyUsage={usage}\n")
    _openssl(
        "req", "-new", *_KEY, "-keyout", str(pair.key), "-out", str(request),
        "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", str(next(_SERIAL)), "-out", str(pair.cert),
        "-days", "-1" if expired else "2", "-extfile", str(extensions),
    )  # fmt: skip
    return pair
