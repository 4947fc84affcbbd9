"""What must survive a restart: the fault-memory state file, the outbox, the state-directory
lock."""
