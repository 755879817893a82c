"""Helpers shared by the tests: processes (Redis, workers), clients, factories, fakes.

No test module imports another test module or a conftest; what they share lives here."""
