"""Categories and their rules, after setup: the editor's form (:mod:`.form`), the "test
against a recent email" (:mod:`.preview`), the colours in Outlook (:mod:`.colours`) and the
pages (:mod:`.views`)."""
