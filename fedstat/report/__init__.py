"""Human-readable results: Manhattan and QQ plots (:mod:`.plots`) and the offline HTML report
(:mod:`.html`). Only released aggregates go in: per-variant statistics, never participant data.
"""
