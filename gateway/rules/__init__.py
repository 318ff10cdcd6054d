"""What the gateway decides without any I/O: which provider states are its own writes
(provenance), and how what a provider holds compares with what the gateway wants (drift)."""
