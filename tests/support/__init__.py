"""Test support code shared by test suites (spec validation, ...)."""
