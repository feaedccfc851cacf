"""Differential privacy for federated sums: zCDP accounting, distributed discrete Gaussian, budget ledger.

Mode ``--privacy dp --epsilon E --delta D`` has every site add integer noise to its integer-encoded
sums *before* secure aggregation, so the coordinator only learns the total of the sites' sums plus
the total of their noise. This package is the pure core of that mode (no grpc, no wire), one
concern per module; the mode itself (the noisy protector) is :mod:`fedstat.privacy.dpmode`:

- :mod:`~fedstat.privacy.dp.accounting`: zCDP ↔ (ε, δ), :func:`rho_to_epsilon`,
  :func:`epsilon_to_rho`;
- :mod:`~fedstat.privacy.dp.calibration`: the per-site noise scale when only ``k_min`` sites'
  noise is guaranteed to be in the total, :func:`calibrate_distributed` (result
  :class:`NoiseCalibration`), with the Kairouz–Liu–Steinke bound for a sum of discrete Gaussians
  in :func:`distributed_rho`;
- :mod:`~fedstat.privacy.dp.sensitivity`: L2 sensitivities of the released integer count arrays,
  :class:`CountSensitivity` (what a computation declares, :mod:`fedstat.computations`) and
  :func:`genotype_count_sensitivity`;
- :mod:`~fedstat.privacy.dp.sampler`: the noise, :func:`discrete_gaussian` (OpenDP's exact
  sampler over OpenSSL randomness);
- :mod:`~fedstat.privacy.dp.ledger`: the per-dataset budget, :class:`BudgetLedger` (SQLite),
  charged idempotently per job, refusing with :class:`BudgetExceeded`.

Privacy unit and composition
----------------------------
One person (one sample row). Neighbouring datasets differ by *replacing* one person's record
(``neighbouring="replace"``, the default; the released sample counts are then public) or by
adding/removing one (``"add_remove"``). A person is assumed to be in one site's data only: a person
enrolled at two sites moves two sites' sums and needs twice the sensitivity. Losses are tracked as
ρ-zCDP, which composes by adding ρ; (ε, δ) is only ever a view of a ρ at a fixed δ, converted with
:func:`rho_to_epsilon`.

References
----------
.. [BS16] M. Bun, T. Steinke, "Concentrated differential privacy: simplifications, extensions,
   and lower bounds", TCC 2016, Proposition 1.3 (ρ-zCDP ⇒ (ρ + 2√(ρ log 1/δ), δ)-DP) and
   Lemma 2.3 (composition adds ρ).
.. [CKS20] C. Canonne, G. Kamath, T. Steinke, "The discrete Gaussian for differential privacy",
   NeurIPS 2020 (arXiv:2004.00010): N_Z(0, σ²) added to a sensitivity-Δ integer query is
   Δ²/(2σ²)-zCDP, exactly as the continuous Gaussian; Corollary 13 (the tighter zCDP → (ε, δ)
   conversion); Algorithm 3 (the exact sampler).
.. [KLS21] P. Kairouz, Z. Liu, T. Steinke, "The distributed discrete Gaussian mechanism for
   federated learning with secure aggregation", ICML 2021 (arXiv:2102.06387), Proposition 14.
"""

from fedstat.privacy.dp.accounting import Conversion, epsilon_to_rho, rho_to_epsilon
from fedstat.privacy.dp.calibration import MIN_SITE_SIGMA, NoiseCalibration, calibrate_distributed, distributed_rho
from fedstat.privacy.dp.ledger import BudgetExceeded, BudgetLedger, ChargeReceipt, LedgerEntry, PrivacyLoss
from fedstat.privacy.dp.sampler import discrete_gaussian
from fedstat.privacy.dp.sensitivity import COUNT_ARRAYS, CountSensitivity, Neighbouring, genotype_count_sensitivity

__all__ = [
    "COUNT_ARRAYS",
    "MIN_SITE_SIGMA",
    "BudgetExceeded",
    "BudgetLedger",
    "ChargeReceipt",
    "Conversion",
    "CountSensitivity",
    "LedgerEntry",
    "Neighbouring",
    "NoiseCalibration",
    "PrivacyLoss",
    "calibrate_distributed",
    "discrete_gaussian",
    "distributed_rho",
    "epsilon_to_rho",
    "genotype_count_sensitivity",
    "rho_to_epsilon",
]
