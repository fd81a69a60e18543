"""The activity view: what Postroom did to each email, from the ledger (:mod:`.views`), with
the subjects fetched live from Graph for the page being shown (:mod:`.live`)."""
