"""A private CA and a server certificate for the embedded services.

The embedded object store speaks TLS only, so clients need a CA to verify it.
The CA is generated on first use, lives only under ``<state>/tls/``, and signs
one server certificate for ``127.0.0.1``/``localhost`` (also SeaweedFS's gRPC
mTLS identity, hence clientAuth too). The CA's private key is discarded:
nothing else can ever be signed with it, so a stolen state directory yields no
key able to impersonate other hosts.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tasks.common.files import PUBLIC, write_atomic

log = logging.getLogger(__name__)

CA_DAYS = 3650
SERVER_DAYS = 825
# Renew well before expiry so a long-running stack never serves an expired cert.
RENEW_BEFORE = dt.timedelta(days=30)
SERVER_NAMES = ("localhost",)
SERVER_IPS = (IPv4Address("127.0.0.1"),)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the generated PEM files."""

    ca: Path
    cert: Path
    key: Path


def tls_files(state_dir: Path) -> TlsFiles:
    """Where the TLS files of a state directory live (no I/O)."""
    d = state_dir / "tls"
    return TlsFiles(ca=d / "ca.pem", cert=d / "server.pem", key=d / "server.key")


def ensure_tls(state_dir: Path) -> TlsFiles:
    """Return the CA and server cert under ``<state>/tls/``, creating them if needed.

    Existing files are reused when the server cert is signed by the CA, covers
    127.0.0.1 and localhost, matches the key, and is not close to expiry;
    otherwise all three are regenerated.

    Args:
        state_dir: The pipeline's state directory.

    Returns:
        The paths of ``ca.pem``, ``server.pem`` and ``server.key`` (mode 0600).
    """
    files = tls_files(state_dir)
    if _valid(files):
        return files
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    files.ca.parent.mkdir(exist_ok=True, mode=0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _server_certificate(key, ca_cert, ca_key)
    write_atomic(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_atomic(files.cert, cert.public_bytes(serialization.Encoding.PEM), mode=PUBLIC)
    write_atomic(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM), mode=PUBLIC)
    log.info("generated a TLS CA and server certificate under %s", files.ca.parent)
    return files


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secure-pipeline local CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
        # pathlen 0: the CA can sign leaf certificates only.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
    sans += [x509.IPAddress(ip) for ip in SERVER_IPS]
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _valid(files: TlsFiles) -> bool:
    """True when the existing files form a usable, unexpired chain."""
    try:
        ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        covers = set(SERVER_NAMES) <= set(san.get_values_for_type(x509.DNSName)) and set(
            SERVER_IPS
        ) <= set(san.get_values_for_type(x509.IPAddress))
        same_key = key.public_key() == cert.public_key()
        fresh = min(ca.not_valid_after_utc, cert.not_valid_after_utc) - _now() > RENEW_BEFORE
        private = files.key.stat().st_mode & 0o077 == 0
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return covers and same_key and fresh and private
