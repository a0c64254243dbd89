"""Smoke tests: the real `run.py` process against loopback fakes of Discord and the AI Horde."""
