"""A throw-away certificate authority for the TLS tests (tests/test_tls.py
and the C ABI's TLS test): its CA and leaves are made by `cryptography`,
written where a hub reads them."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import HOST


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertAuthority:
    """A throw-away certificate authority and the leaf certificates it signs
    for 127.0.0.1, written where the hub reads them."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("wshub test CA")).issuer_name(_name("wshub test CA"))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cafile = directory / "ca.pem"
        self.cafile.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.certfile = directory / "cert.pem"
        self.keyfile = directory / "key.pem"

    def issue(self, common: str = "wshub test leaf") -> bytes:
        """Signs a new leaf for 127.0.0.1 into certfile/keyfile; returns its DER."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]),
                critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.keyfile.write_bytes(_pem_key(key))
        return cert.public_bytes(serialization.Encoding.DER)

    def context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.cafile))


def tls_socket(ca: CertAuthority, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, port), timeout=10)
    return ca.context().wrap_socket(raw, server_hostname=HOST)
