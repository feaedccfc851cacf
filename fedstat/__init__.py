"""fedstat: federated, privacy-preserving statistics for genomics.

Every statistic is a sum over participants: sites compute local sums, a privacy mode protects
them, the coordinator combines only their total. See ARCHITECTURE in the README.
"""

__version__ = "0.1.0"
