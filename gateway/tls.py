"""TLS for the public listener: the server context, and ``dm-gateway tls init``'s local CA.

A legacy client that hard-codes ``https://api.twitter.com`` reaches the gateway when that name resolves to
it (a hosts file, DNS) and it trusts the certificate it is shown. ``tls init`` makes a small local CA and a
serving certificate for the names given, signed by it; the operator points ``[server] tls_cert`` /
``tls_key`` at the serving pair and makes the clients trust the CA certificate (docs/CLIENTS.md). The CA's
key never leaves the output directory; a later ``tls init`` into the same directory reuses that CA, so
clients that already trust it keep trusting the new serving certificate.

The DNS names of the configured serving certificate are also base URLs an OAuth 1.0a client may have
signed (``https://NAME``): a name worth a certificate is one clients use (``certificate_bases``).

Keys are RSA 2048 and signatures SHA-256, which every TLS stack from the last fifteen years accepts; an
ECDSA-only certificate would shut out some of the old clients this exists for.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import Config, ConfigError, is_host_name

if TYPE_CHECKING:  # cryptography is imported where it is used, so that serving without TLS never loads it
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger("gateway")

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "cert.pem"
SERVER_KEY = "key.pem"

#: Apple platforms refuse a TLS server certificate valid for longer than this, even from a CA of one's own.
SERVER_DAYS = 825
CA_DAYS = 10 * 365

#: ``[server] tls_min_version`` values, and the protocol each names.
TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
#: OpenSSL 3 allows TLS 1.0 and 1.1 (their handshakes sign with SHA-1 and MD5) only at security level 0.
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"


class TlsInitError(Exception):
    """``tls init`` cannot do what it was asked; the message is the operator's one line."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    ca_reused: bool


# The server context ------------------------------------------------------------------------------------


def server_tls_context(config: Config) -> ssl.SSLContext | None:
    """The TLS context for [server] tls_cert / tls_key and tls_min_version, or None to serve plain HTTP."""
    server = config.server
    if server.tls_cert is None or server.tls_key is None:
        return None
    _check_pem(server.tls_cert, server.tls_key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    minimum = TLS_VERSIONS[server.tls_min_version]
    with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: asked for, and warned about at start
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = minimum
    if minimum < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers(LEGACY_CIPHERS)
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError("server.tls_key is not the key of the certificate in server.tls_cert") from None
        raise ConfigError(f"server.tls_cert / server.tls_key cannot be used: {exc.reason or exc}") from None
    return context


def warn_about_old_tls(config: Config) -> None:
    """A warning at start when the listener accepts TLS older than 1.2."""
    if config.server.tls_cert is not None and TLS_VERSIONS[config.server.tls_min_version] < ssl.TLSVersion.TLSv1_2:
        log.warning(
            "server.tls_min_version %s: clients may connect with TLS %s, which has known weaknesses; "
            "raise it to 1.2 once the old clients are gone",
            config.server.tls_min_version,
            config.server.tls_min_version,
        )


def certificate_bases(config: Config) -> tuple[str, ...]:
    """``https://NAME`` for each DNS name (not a wildcard) of the configured serving certificate."""
    from cryptography import x509

    if config.server.tls_cert is None:
        return ()
    try:
        certificate = x509.load_pem_x509_certificates(Path(config.server.tls_cert).read_bytes())[0]
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return ()  # serving checks the pair first and names the problem
    return tuple(f"https://{name.lower()}" for name in names.get_values_for_type(x509.DNSName) if is_host_name(name))


def _check_pem(cert_path: str, key_path: str) -> None:
    """Each file of the pair holds what it should, so a wrong one is named (OpenSSL only says "PEM lib"), and an
    encrypted key is refused before OpenSSL would ask a terminal for its passphrase."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from cryptography.x509 import load_pem_x509_certificates

    cert, key = _read_tls_file("tls_cert", cert_path), _read_tls_file("tls_key", key_path)
    try:
        load_pem_x509_certificates(cert)
    except ValueError:
        raise ConfigError(f"server.tls_cert: {cert_path!r} is not a PEM certificate") from None
    try:
        load_pem_private_key(key, password=None)
    except TypeError:  # the key is encrypted
        raise ConfigError(f"server.tls_key: {key_path!r} is encrypted; give the gateway an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"server.tls_key: {key_path!r} is not a PEM private key") from None


def _read_tls_file(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"server.{key}: cannot read {path!r} ({exc.strerror})") from None


# tls init ----------------------------------------------------------------------------------------------


def init(hosts: list[str], directory: Path) -> TlsFiles:
    """Write a serving certificate and key for ``hosts`` into ``directory``, signed by the CA there (made
    first when the directory holds none). Private keys are written readable by their owner only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names = _san_entries(hosts)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TlsInitError(f"cannot create {str(directory)!r} ({exc.strerror})") from None
    ca_cert_path, ca_key_path = directory / CA_CERT, directory / CA_KEY
    now = datetime.datetime.now(datetime.UTC)
    reused = ca_cert_path.exists() or ca_key_path.exists()
    if reused:
        try:
            ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
            ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise TlsInitError(
                f"{str(directory)!r} holds a CA that cannot be read ({type(exc).__name__}); "
                f"remove {CA_CERT} and {CA_KEY} to make a new one"
            ) from None
        if not isinstance(ca_key, rsa.RSAPrivateKey) or ca_key.public_key() != ca_cert.public_key():
            raise TlsInitError(f"{CA_KEY} in {str(directory)!r} is not the key of {CA_CERT}")
    else:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legacy-dm-gateway local CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(ca_key_path, _private_pem(ca_key), private=True)
        _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    first = hosts[0]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(min(now + datetime.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_cert_path, server_key_path = directory / SERVER_CERT, directory / SERVER_KEY
    _write(server_key_path, _private_pem(key), private=True)
    _write(server_cert_path, certificate.public_bytes(serialization.Encoding.PEM), private=False)
    return TlsFiles(directory, ca_cert_path, server_cert_path, server_key_path, reused)


def instructions(files: TlsFiles, hosts: list[str]) -> str:
    """What ``tls init`` prints: the config lines, and how clients come to trust the CA."""
    ca = files.ca_cert.resolve()
    names = " ".join(host for host in hosts if is_host_name(host))
    return "\n".join(
        [
            (
                f"{'reused the CA' if files.ca_reused else 'made a CA'} in {files.directory.resolve()}; "
                f"serving certificate for {', '.join(hosts)}"
            ),
            "",
            "Add to the gateway's configuration:",
            "",
            "[server]",
            f'tls_cert = "{files.server_cert.resolve()}"',
            f'tls_key = "{files.server_key.resolve()}"',
            "tls_port = 443  # HTTPS here (a port below 1024 needs the privilege); server.port stays plain HTTP",
            '# tls_min_version = "1.0"  # only for clients whose TLS stack predates TLS 1.2',
            "",
            *(
                [f"Make the names resolve to the gateway (hosts file or DNS): <gateway address> {names}", ""]
                if names
                else []
            ),
            f"Make each client trust the CA certificate {ca} (never copy {CA_KEY} anywhere):",
            f"  Debian/Ubuntu:  cp {ca} /usr/local/share/ca-certificates/dm-gateway.crt && update-ca-certificates",
            f"  macOS:          security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca}",
            f"  Windows:        certutil -addstore -f Root {ca}",
            f"  Java:           keytool -importcert -cacerts -alias dm-gateway -file {ca}",
            f"  Python:         REQUESTS_CA_BUNDLE={ca} (requests), SSL_CERT_FILE={ca} (ssl, aiohttp)",
            f"  Node.js:        NODE_EXTRA_CA_CERTS={ca}",
            "  Android and more: docs/CLIENTS.md",
        ]
    )


def _san_entries(hosts: list[str]) -> list:
    from cryptography import x509

    if not hosts:
        raise TlsInitError("give at least one --host")
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not is_host_name(host) or len(host) > 253:
            raise TlsInitError(f"--host {host!r} is not a DNS name or an IP address")
        entries.append(x509.DNSName(host.lower()))
    return entries


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,  # RSA key exchange, which TLS 1.0 to 1.2 clients may still use
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write ``path`` whole; a private key is created mode 0600 and never readable by others, even briefly."""
    try:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise TlsInitError(f"cannot write {str(path)!r} ({exc.strerror})") from None
