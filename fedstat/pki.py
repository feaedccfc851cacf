"""The consortium's public-key infrastructure: one CA, certificates for every party.

Identity in fedstat is a certificate's subject: the common name (CN) names the party and the
organizational unit (OU) gives its role, one of ``coordinator``, ``site`` or ``analyst``.
Keys are ECDSA P-256 (supported by gRPC's TLS stack everywhere); private keys are written with
mode 0600 and never leave the machine they were made on.

Revocation is an X.509 CRL (``ca/crl.pem``) signed by the CA; the coordinator and every site
name it in their ``[tls] crl`` setting and re-read it when it changes. Rotation:

- a party's certificate: ``fedstat ca issue`` again under the same name (and ``fedstat ca revoke``
  the old one); daemons pick up new files on their next connection (the coordinator on its next
  handshake);
- the CA itself: ``fedstat ca rotate`` makes a new CA key and writes ``ca.pem`` as a bundle of the
  new and the old CA certificates, so every certificate the old CA issued stays valid while
  parties are re-issued one by one under the new CA; nobody's certificate is invalidated at once.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedstat.errors import AuthError, ConfigError, InputError
from fedstat.formats.atomic import atomic_write_bytes

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
    """A private key: never readable by others, not even while it is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, file_mode=0o600)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _validate_name(name: str) -> None:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise InputError(f"invalid name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")


def init_ca(directory: Path, *, name: str = "fedstat consortium CA") -> tuple[Path, Path]:
    """Create a consortium CA in ``directory`` (``ca.pem``, ``ca.key``, an empty ``crl.pem``);
    refuses to overwrite."""
    directory = Path(directory)
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() or key_path.exists():
        raise InputError(f"{directory} already holds a CA (ca.pem/ca.key); refusing to overwrite it")
    cert, key = _new_ca(name)
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write_crl(directory, [])
    return cert_path, key_path


def _new_ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
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
    return cert, key


def _load_ca(ca_dir: Path) -> tuple[list[x509.Certificate], ec.EllipticCurvePrivateKey]:
    """The CA bundle (current CA first) and the current CA's key."""
    try:
        bundle = x509.load_pem_x509_certificates((ca_dir / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise InputError(f"no CA in {ca_dir}: run `fedstat ca init {ca_dir}` first") from exc
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return bundle, key


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
    (ca_cert, *_), ca_key = _load_ca(ca_dir)
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
    crl: Path | None = None  # the consortium's certificate revocation list (ca/crl.pem)

    def load(self) -> tuple[bytes, bytes, bytes]:
        """Read (ca, cert, key) PEM bytes; ConfigError naming the missing file."""
        out = []
        for label, p in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            try:
                out.append(Path(p).read_bytes())
            except OSError as exc:
                raise ConfigError(f"tls.{label}: cannot read {p}: {exc.strerror}") from exc
        return out[0], out[1], out[2]


# --- revocation and rotation ------------------------------------------------------------------

CRL_VALID_DAYS = 30  # re-sign with `fedstat ca crl` (e.g. weekly from cron); a stale CRL fails closed
REVOCATION_REASONS = ("unspecified", "key_compromise", "superseded", "cessation_of_operation")


@dataclass(frozen=True)
class Revoked:
    serial: int
    revoked_at: dt.datetime
    reason: str


def _write_crl(ca_dir: Path, entries: list[Revoked]) -> Path:
    """Sign ``entries`` into ``ca_dir/crl.pem`` with the current CA key."""
    (ca_cert, *_), ca_key = _load_ca(ca_dir)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=CRL_VALID_DAYS))
    )
    for e in entries:
        rc = x509.RevokedCertificateBuilder().serial_number(e.serial).revocation_date(e.revoked_at)
        if e.reason != "unspecified":
            rc = rc.add_extension(x509.CRLReason(x509.ReasonFlags[e.reason]), critical=False)
        builder = builder.add_revoked_certificate(rc.build())
    crl = builder.sign(ca_key, hashes.SHA256())
    path = ca_dir / "crl.pem"
    _write_public(path, crl.public_bytes(serialization.Encoding.PEM))
    return path


def refresh_crl(ca_dir: Path) -> Path:
    """Re-sign ``ca_dir/crl.pem`` with the same entries and a fresh nextUpdate (the daemons refuse a
    CRL past its nextUpdate: a revocation must not stop being enforced because nobody re-signed)."""
    return _write_crl(Path(ca_dir), revoked_entries(ca_dir))


def revoked_entries(ca_dir: Path) -> list[Revoked]:
    """What ``ca_dir/crl.pem`` revokes (empty when there is no CRL yet)."""
    path = Path(ca_dir) / "crl.pem"
    if not path.exists():
        return []
    crl = x509.load_pem_x509_crl(path.read_bytes())
    out = []
    for rc in crl:
        try:
            reason = rc.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
        except x509.ExtensionNotFound:
            reason = "unspecified"
        out.append(Revoked(serial=rc.serial_number, revoked_at=rc.revocation_date_utc, reason=reason))
    return out


def revoke(ca_dir: Path, *, cert: Path | None = None, serial: int | None = None, reason: str = "unspecified") -> int:
    """Add a certificate (its PEM file, or its serial number) to the CA's CRL; returns the serial.

    Revoking twice is harmless. The coordinator and the sites re-read the CRL when it changes.
    """
    ca_dir = Path(ca_dir)
    if (cert is None) == (serial is None):
        raise InputError("name exactly one certificate to revoke: its PEM file or its serial number")
    if reason not in REVOCATION_REASONS:
        raise InputError(f"unknown revocation reason {reason!r}; expected one of {', '.join(REVOCATION_REASONS)}")
    if cert is not None:
        try:
            leaf = x509.load_pem_x509_certificate(Path(cert).read_bytes())
        except (OSError, ValueError) as exc:
            raise InputError(f"{cert}: not a readable PEM certificate") from exc
        bundle, _ = _load_ca(ca_dir)
        if not any(_issued_by(leaf, ca) for ca in bundle):
            raise InputError(f"{cert} was not issued by the CA in {ca_dir}")
        serial = leaf.serial_number
    assert serial is not None
    entries = revoked_entries(ca_dir)
    if all(e.serial != serial for e in entries):
        entries.append(Revoked(serial=serial, revoked_at=dt.datetime.now(dt.UTC), reason=reason))
    _write_crl(ca_dir, entries)
    return serial


def rotate_ca(ca_dir: Path, *, name: str = "fedstat consortium CA") -> Path:
    """Make a new CA key and certificate; ``ca.pem`` becomes the bundle (new, then every older CA)
    so certificates issued so far stay valid. New certificates are issued by the new CA; the old
    key is kept under ``retired/`` (mode 0600) until every party has been re-issued."""
    ca_dir = Path(ca_dir)
    bundle, old_key = _load_ca(ca_dir)
    entries = revoked_entries(ca_dir)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    _write_private(ca_dir / "retired" / f"ca-{stamp}.key", _key_pem(old_key))
    _write_public(ca_dir / "retired" / f"ca-{stamp}.pem", bundle[0].public_bytes(serialization.Encoding.PEM))
    cert, key = _new_ca(f"{name} {stamp}")
    _write_private(ca_dir / "ca.key", _key_pem(key))
    _write_public(ca_dir / "ca.pem", b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *bundle]))
    _write_crl(ca_dir, entries)
    return ca_dir / "ca.pem"


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def issued_by_bundle(cert: x509.Certificate, ca_pem: bytes) -> bool:
    """Whether one of the CA certificates in ``ca_pem`` (a bundle during a rotation) issued ``cert``."""
    return any(_issued_by(cert, ca) for ca in x509.load_pem_x509_certificates(ca_pem))


def files_stamp(paths: list[Path]) -> tuple[int, ...]:
    """(mtime, size) of each file: what the daemons compare to re-read changed TLS files.
    Raises OSError for a file that cannot be read."""
    out: list[int] = []
    for p in paths:
        st = Path(p).stat()
        out += [st.st_mtime_ns, st.st_size]
    return tuple(out)


class RevocationList:
    """A CRL file as the daemons honour it: re-read when it (or the CA bundle) changes, its
    signature checked against the CA bundle. ``path=None`` means no revocation list is configured
    (nothing is revoked). ``ca`` is the CA bundle's file (re-read, so a rotated CA's CRL verifies)
    or its PEM bytes."""

    def __init__(self, path: Path | None, ca: Path | bytes):
        self.path, self._ca = (Path(path) if path else None), ca
        self._stamp: tuple[int, ...] | None = None
        self._serials: frozenset[int] = frozenset()
        self._next_update: dt.datetime | None = None
        self._lock = threading.Lock()
        self.serials()  # a missing or forged CRL is a configuration error at start

    def serials(self) -> frozenset[int]:
        if self.path is None:
            return frozenset()
        files = [self.path] if isinstance(self._ca, bytes) else [self.path, Path(self._ca)]
        try:
            stamp = files_stamp(files)
        except OSError as exc:
            raise ConfigError(f"tls: cannot read {exc.filename}: {exc.strerror}") from exc
        with self._lock:
            if stamp != self._stamp:
                try:
                    crl = x509.load_pem_x509_crl(self.path.read_bytes())
                except ValueError as exc:
                    raise ConfigError(f"tls.crl: {self.path} is not a PEM certificate revocation list") from exc
                ca_pem = self._ca if isinstance(self._ca, bytes) else Path(self._ca).read_bytes()
                cas = x509.load_pem_x509_certificates(ca_pem)
                if not any(crl.is_signature_valid(ca.public_key()) for ca in cas):  # type: ignore[arg-type]
                    raise ConfigError(f"tls.crl: {self.path} is not signed by the consortium CA")
                self._serials = frozenset(rc.serial_number for rc in crl)
                self._next_update = crl.next_update_utc
                self._stamp = stamp
            if self._next_update is not None and dt.datetime.now(dt.UTC) > self._next_update:
                raise ConfigError(
                    f"tls.crl: {self.path} is stale (its nextUpdate was "
                    f"{self._next_update.isoformat(timespec='seconds')}); revocations are not trusted past it. "
                    "The CA holder re-signs it with `fedstat ca crl CA_DIR`; copy the new crl.pem here"
                )
            return self._serials

    def is_revoked(self, cert: x509.Certificate) -> bool:
        return cert.serial_number in self.serials()

    def is_revoked_pem(self, pem: bytes) -> bool:
        return self.is_revoked(x509.load_pem_x509_certificate(pem))


def sign_statement(key_pem: bytes, statement: bytes) -> bytes:
    """ECDSA-SHA256 signature of ``statement`` with a party's certificate key (PEM)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AuthError("the certificate key is not an ECDSA key; re-issue it with `fedstat ca issue`")
    return key.sign(statement, ec.ECDSA(hashes.SHA256()))


def verify_statement(certificate: x509.Certificate, statement: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the certificate key's ECDSA-SHA256 signature of ``statement``."""
    public = certificate.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or not signature:
        return False
    try:
        public.verify(signature, statement, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
