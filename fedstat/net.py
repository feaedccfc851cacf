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
from fedstat.pki import Identity, TlsFiles, identity_from_pem

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
    """TLS server credentials that require a client certificate from the consortium CA."""
    ca, cert, key = tls.load()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def secure_channel(address: str, tls: TlsFiles) -> grpc.Channel:
    """A mutual-TLS channel to ``address`` presenting this party's certificate."""
    ca, cert, key = tls.load()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(address, creds, options=CHANNEL_OPTIONS)


def peer_identity(context: grpc.ServicerContext) -> Identity | None:
    """The verified identity of the caller, or None if it presented no certificate."""
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert")
    if not pems:
        return None
    return identity_from_pem(pems[0])


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
