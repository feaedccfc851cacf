"""The fedstat exception hierarchy.

::

    FedstatError
    ├── InputError (ValueError)          bad file, table, flag or spec from a user
    │   ├── GenotypeFileError            malformed / inconsistent genotype files
    │   └── SampleTableError             malformed samples.tsv
    ├── ConfigError (ValueError)         a TOML config key is missing or invalid
    ├── PolicyRefused                    a site refused a job (reason is shown to the analyst)
    ├── PrivacyError                     a privacy mode could not protect or combine sums
    ├── ProtocolError                    a peer broke the job protocol (bad message, bad order)
    ├── SiteUnavailable                  a site disconnected or timed out
    │   └── SiteDropped                  its connection closed mid-job (names the site)
    ├── JobFailed                        a job ended FAILED; carries the reason
    └── AuthError                        missing / untrusted certificate, wrong role

Messages name the file, line, variant, site or key that was wrong. They never contain a
participant-level value (a genotype, a phenotype, a sample's row).
"""

from __future__ import annotations


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting untrusted input in an error message
    (an error never echoes a long input whole)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class FedstatError(Exception):
    """Root of every error fedstat raises on purpose."""


class InputError(FedstatError, ValueError):
    """A user-supplied file, table, flag or job spec is invalid."""


class GenotypeFileError(InputError):
    """A genotype file (bed/bim/fam, pgen/pvar/psam, VCF/BCF) is malformed or inconsistent."""


class SampleTableError(InputError):
    """A sample table (samples.tsv) is malformed or inconsistent with the genotypes."""


class ConfigError(FedstatError, ValueError):
    """A configuration file is missing a key or holds an invalid value."""


class PolicyRefused(FedstatError):
    """A site's policy refused a job; the message is the reason shown to the analyst."""


class PrivacyError(FedstatError):
    """A privacy mode could not protect or combine sums (e.g. encoding overflow)."""


class ProtocolError(FedstatError):
    """A peer sent a message that breaks the job protocol."""


class SiteUnavailable(FedstatError):
    """A site disconnected, or did not answer before a deadline."""


class SiteDropped(SiteUnavailable):
    """A site's connection closed while a job was waiting on it (``site`` names it)."""

    def __init__(self, site: str, message: str):
        super().__init__(message)
        self.site = site


class JobFailed(FedstatError):
    """A job ended in the FAILED state; the message is the stored reason."""


class AuthError(FedstatError):
    """A peer has no certificate, one from another CA, or a role that may not call this."""
