"""Reads: the read-only guard, grouped reads, the result wire format, and the shared reads."""
