"""The generated CA and server certificate: a chain a TLS client accepts, private key 0600."""

from __future__ import annotations

import ssl
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tasks.localstack.tls import ensure_tls


def _handshake(files, server_hostname: str, cafile: Path) -> None:
    """A real TLS handshake in memory: the client verifies the chain and the name."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert, files.key)
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, conn, out, peer_in in (
            ("client", client, c_out, s_in),
            ("server", server, s_out, c_in),
        ):
            if not done[name]:
                try:
                    conn.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def test_chain_verifies_for_ip_and_localhost(tmp_path):
    files = ensure_tls(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert IPv4Address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku  # CLIENT_AUTH too: SeaweedFS gRPC mTLS
    _handshake(files, "127.0.0.1", files.ca)
    _handshake(files, "localhost", files.ca)


def test_handshake_fails_for_other_names_and_other_cas(tmp_path):
    files = ensure_tls(tmp_path / "a")
    other = ensure_tls(tmp_path / "b")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files, "example.com", files.ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files, "127.0.0.1", other.ca)


def test_private_key_is_0600_and_dir_0700(tmp_path):
    files = ensure_tls(tmp_path)
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert files.key.parent.stat().st_mode & 0o777 == 0o700
    assert b"PRIVATE KEY" not in files.cert.read_bytes() + files.ca.read_bytes()


def test_reused_when_valid(tmp_path):
    first = ensure_tls(tmp_path)
    before = [p.read_bytes() for p in (first.ca, first.cert, first.key)]
    second = ensure_tls(tmp_path)
    assert [p.read_bytes() for p in (second.ca, second.cert, second.key)] == before


@pytest.mark.parametrize("damage", ["wider_mode", "foreign_key", "garbage_cert", "missing_ca"])
def test_regenerated_when_invalid(tmp_path, damage):
    files = ensure_tls(tmp_path)
    old_cert = files.cert.read_bytes()
    if damage == "wider_mode":
        files.key.chmod(0o644)
    elif damage == "foreign_key":
        files.key.write_bytes(ensure_tls(tmp_path / "other").key.read_bytes())
    elif damage == "garbage_cert":
        files.cert.write_bytes(b"not a certificate")
    else:
        files.ca.unlink()
    files = ensure_tls(tmp_path)
    assert files.cert.read_bytes() != old_cert
    assert files.key.stat().st_mode & 0o777 == 0o600
    _handshake(files, "127.0.0.1", files.ca)
