"""Processing: what to do with each new message (pure) and doing it exactly once (ledger).

* :mod:`.view` and :mod:`.plan` — the plain data the decision works on and produces;
* :mod:`.rules` — Tekst's filter-block vocabulary, evaluated case-insensitively;
* :mod:`.decide` — ``decide(view, categories, classifier) -> Plan``, a pure function;
* :mod:`.models` and :mod:`.executor` — the ledger and the idempotent execution of a plan.
"""
