"""Interoperability: FHIR R4 Bundles, REDCap exports and a CDS Hooks service (docs/interoperability.md).

Every import is converted to the records format's text frames and validated by
`dashboard.clinical.records.validate.validate_frames`, so data from an EHR or a research database meets exactly the
checks a CSV import meets; only the place named in each message differs (Bundle entry, REDCap record
and field instead of a CSV line).
"""
