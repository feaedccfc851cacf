"""The consortium's public-key infrastructure: one CA, certificates for every party.

Identity in fedstat is a certificate's subject: the common name (CN) names the party and the
organizational unit (OU) gives its role, one of ``coordinator``, ``site`` or ``analyst``.
Keys are ECDSA P-256 (supported by gRPC's TLS stack everywhere); private keys are written with
mode 0600 and never leave the machine they were made on.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedstat.errors import ConfigError, InputError

ROLES = ("coordinator", "site", "analyst")
CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 825


@dataclass(frozen=True)
class Identity:
    """A party as named by its certificate: ``CN`` and role (``OU``)."""

    name: str
    role: str

    def __str__(self) -> str:
        return f"{self.role}:{self.name}"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _validate_name(name: str) -> None:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise InputError(f"invalid name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")


def init_ca(directory: Path, *, name: str = "fedstat consortium CA") -> tuple[Path, Path]:
    """Create a consortium CA in ``directory`` (``ca.pem``, ``ca.key``); refuses to overwrite."""
    directory = Path(directory)
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() or key_path.exists():
        raise InputError(f"{directory} already holds a CA (ca.pem/ca.key); refusing to overwrite it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ca"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issue(
    ca_dir: Path,
    out_dir: Path,
    *,
    name: str,
    role: str,
    hosts: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """Issue a certificate for ``name`` with ``role``; writes ``<name>.pem`` and ``<name>.key``.

    ``hosts`` (DNS names or IP addresses) go into the subjectAltName; a coordinator needs the
    names sites and analysts dial (``localhost``, ``127.0.0.1`` for a one-machine consortium).
    """
    _validate_name(name)
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    ca_dir, out_dir = Path(ca_dir), Path(out_dir)
    try:
        ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise InputError(f"no CA in {ca_dir}: run `fedstat ca init {ca_dir}` first") from exc
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    if not sans:
        sans.append(x509.DNSName(name))
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role == "coordinator":
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{name}.pem", out_dir / f"{name}.key"
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def identity_from_subject(subject: x509.Name) -> Identity:
    cn = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return Identity(name=str(cn[0].value) if cn else "", role=str(ou[0].value) if ou else "")


def identity_from_pem(pem: bytes) -> Identity:
    return identity_from_subject(x509.load_pem_x509_certificate(pem).subject)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of one party's CA bundle, certificate and private key."""

    ca: Path
    cert: Path
    key: Path

    def load(self) -> tuple[bytes, bytes, bytes]:
        """Read (ca, cert, key) PEM bytes; ConfigError naming the missing file."""
        out = []
        for label, p in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            try:
                out.append(Path(p).read_bytes())
            except OSError as exc:
                raise ConfigError(f"tls.{label}: cannot read {p}: {exc.strerror}") from exc
        return out[0], out[1], out[2]
