"""The clinical domain: message codec, plausibility ranges, alarm engine, sources, FHIR."""
