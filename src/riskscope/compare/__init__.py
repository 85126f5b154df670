"""Compare models: layer similarity (CKA, SVCCA, RSA) with nulls, feature universality, risk-direction transfer."""
