"""Node verification: a probe run inside each session, judged against its offer and the
provider's signed attestation (issue #9)."""
