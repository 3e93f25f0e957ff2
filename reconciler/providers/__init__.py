"""Drivers: what turns a planned step into a change in the world (one protocol, several kinds)."""
