"""gRPC plumbing shared by the daemons and the analyst client: mutual TLS, identities, errors.

Everything is mutual TLS under the consortium CA. A peer's identity is read from the
certificate the TLS handshake verified, never from a message field.
"""

from __future__ import annotations

from typing import Any

import grpc

from fedstat.errors import (
    AuthError,
    FedstatError,
    InputError,
    JobFailed,
    PolicyRefused,
    ProtocolError,
    SiteUnavailable,
)
from fedstat.pki import Identity, TlsFiles, files_stamp, identity_from_pem

#: Channel options, each with its reason.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Sites hold one stream for days: ping every 30 s so NATs and firewalls keep it open and a
    # dead coordinator is noticed within a minute.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # Allow keepalive pings on an idle stream (no RPC data in flight between rounds).
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Our chunks are at most ~1 MiB (fedstat.privacy.base.MAX_CHUNK_BYTES); 8 MiB leaves room
    # for protobuf framing and refuses anything absurd.
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
]

SERVER_OPTIONS: list[tuple[str, Any]] = [
    # Accept the clients' 30 s keepalive pings (the default minimum is 5 minutes, which would
    # make the server close connections with GOAWAY "too_many_pings").
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
]


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """TLS server credentials that require a client certificate from the consortium CA.

    The files are re-read when they change (checked at each new handshake), so a rotated server
    certificate or a CA bundle extended by ``fedstat ca rotate`` takes effect without a restart.
    """
    ca, cert, key = tls.load()
    stamp = [_stamp(tls)]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        now = _stamp(tls)
        if now is None or now == stamp[0]:
            return None
        try:
            ca2, cert2, key2 = tls.load()
            config = grpc.ssl_server_certificate_configuration([(key2, cert2)], root_certificates=ca2)
        except Exception:  # noqa: BLE001 - half-written files: keep the current ones, retry next time
            return None
        stamp[0] = now
        return config

    initial = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
    # grpc documents that the fetcher returns None for "no change"; types-grpcio types it as never None
    return grpc.dynamic_ssl_server_credentials(initial, fetch, require_client_authentication=True)  # type: ignore[arg-type]


def _stamp(tls: TlsFiles) -> tuple[int, ...] | None:
    try:
        return files_stamp([tls.ca, tls.cert, tls.key])
    except OSError:  # being replaced: try again at the next handshake
        return None


def secure_channel(address: str, tls: TlsFiles) -> grpc.Channel:
    """A mutual-TLS channel to ``address`` presenting this party's certificate."""
    ca, cert, key = tls.load()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(address, creds, options=CHANNEL_OPTIONS)


def peer_identity(context: grpc.ServicerContext) -> Identity | None:
    """The verified identity of the caller, or None if it presented no certificate."""
    pem = peer_certificate(context)
    return identity_from_pem(pem) if pem is not None else None


def peer_certificate(context: grpc.ServicerContext) -> bytes | None:
    """The caller's certificate (PEM) as the TLS handshake verified it, or None."""
    pems = context.auth_context().get("x509_pem_cert")
    return bytes(pems[0]) if pems else None


def server_certificate(address: str, tls: TlsFiles, *, timeout: float = 10.0) -> bytes:
    """The certificate (PEM) the server at ``address`` presents, fetched over a TLS handshake
    verified against the consortium CA (a site checks it against the revocation list before it
    opens its stream). Raises OSError/ssl.SSLError when the handshake fails."""
    import socket  # noqa: PLC0415
    import ssl  # noqa: PLC0415

    host, _, port = address.rpartition(":")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=tls.ca.read_text())
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            der = s.getpeercert(binary_form=True)
    assert der is not None
    return ssl.DER_cert_to_PEM_cert(der).encode()


_TO_STATUS: list[tuple[type[FedstatError], grpc.StatusCode]] = [
    (AuthError, grpc.StatusCode.PERMISSION_DENIED),
    (PolicyRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (InputError, grpc.StatusCode.INVALID_ARGUMENT),
    (ProtocolError, grpc.StatusCode.FAILED_PRECONDITION),
    (SiteUnavailable, grpc.StatusCode.UNAVAILABLE),
    (JobFailed, grpc.StatusCode.ABORTED),
]


def status_for(exc: FedstatError) -> grpc.StatusCode:
    for cls, code in _TO_STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def error_from_rpc(exc: grpc.RpcError, *, address: str) -> FedstatError:
    """Translate a gRPC failure seen by a client into a fedstat error with a useful message."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return SiteUnavailable(
            f"cannot reach the coordinator at {address}: {details}. Is it running, and does your "
            "profile's certificate come from the consortium CA?"
        )
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AuthError(details)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
        return InputError(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return PolicyRefused(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return SiteUnavailable(f"the coordinator at {address} did not answer in time")
    return FedstatError(f"coordinator error ({code.name if code else 'unknown'}): {details}")
