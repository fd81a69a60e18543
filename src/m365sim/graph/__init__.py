"""Microsoft Graph v1.0, mail subset: dispatch, access rules, throttling, faults, endpoints."""
