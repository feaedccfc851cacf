"""What a site records and checks about a job offer before it decides: the offer's audit record
and the analyst's certificate and signature (used by :class:`site_agent.agent.SiteAgent`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any

from fedstat.errors import PolicyRefused, shown
from fedstat.jobs import JobSpec
from fedstat.pki import RevocationList, identity_from_subject, issued_by_bundle, verify_statement
from fedstat.wire import site_pb2

from .audit_log import AuditLog
from .audit_schema import AuditPayloadError, spec_digest

log = logging.getLogger("fedstat.site")


def record_offer(audit: AuditLog, offer: site_pb2.JobOffer, spec: JobSpec, default_dataset: str, **fields: Any) -> None:
    """One audit record about a job: who asked what, the decision and why (no participant data).
    An offer too malformed to record as given (an invalid spec) is recorded with its fields
    cut to what the log accepts, so every decision leaves a record."""
    event = "reoffer" if offer.resumed else "offer"  # reoffer: after a coordinator restart or a reconnect
    try:
        audit.append(
            event=event,
            analyst=offer.analyst,
            job_id=offer.job_id,
            spec_digest=spec_digest(spec.to_json()),
            signature=hashlib.sha256(offer.spec_signature).hexdigest() if offer.spec_signature else None,
            analyses=list(spec.analyses),
            privacy=spec.privacy,
            purpose=spec.purpose or "GRU",
            dataset=spec.dataset or default_dataset,
            **fields,
        )
    except AuditPayloadError as exc:
        log.warning("job %s: offer recorded in short form: %s", shown(offer.job_id), exc)
        audit.append(
            event=event,
            analyst=_printable(offer.analyst),
            job_id=_printable(offer.job_id),
            spec_digest=spec_digest(spec.to_json()),
            decision=fields.get("decision"),
            reason=_printable(fields.get("reason", ""), 400) or None,
        )


def check_analyst(offer: site_pb2.JobOffer, spec: JobSpec, *, ca_pem: bytes, revocations: RevocationList) -> None:
    """The analyst the coordinator names must hold a certificate from the consortium CA, for that
    name and the analyst role, valid now and not on this site's revocation list, and must have
    signed this very spec with its key (the coordinator cannot forge or change a job)."""
    from cryptography import x509  # noqa: PLC0415

    if not offer.analyst_certificate:
        raise PolicyRefused("the offer carries no analyst certificate; this site accepts only identified analysts")
    try:
        cert = x509.load_pem_x509_certificate(offer.analyst_certificate)
    except ValueError:
        raise PolicyRefused("the analyst certificate in the offer is not a PEM certificate") from None
    ident = identity_from_subject(cert.subject)
    if not issued_by_bundle(cert, ca_pem):
        raise PolicyRefused("the analyst certificate in the offer was not issued by the consortium CA")
    if ident.name != offer.analyst or ident.role != "analyst":
        raise PolicyRefused(f"the certificate in the offer is not analyst {offer.analyst}'s")
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PolicyRefused(f"analyst {offer.analyst}'s certificate is not valid now")
    if revocations.is_revoked(cert):
        raise PolicyRefused(f"analyst {offer.analyst}'s certificate has been revoked")
    if not verify_statement(cert, spec.signing_bytes(), offer.spec_signature):
        raise PolicyRefused(
            f"the job spec is not signed by analyst {offer.analyst} (or was changed after signing); this site "
            "runs only jobs their analyst signed with their certificate key"
        )


def dp_fields(spec: JobSpec) -> dict[str, float]:
    """The job's ε and δ for the audit record of a dp job."""
    return {"epsilon": float(spec.options["dp_epsilon"]), "delta": float(spec.options["dp_delta"])}


def _printable(text: str, limit: int = 100) -> str:
    """``text`` without control characters, cut to ``limit`` characters (for a short audit record)."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])
