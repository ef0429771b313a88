"""A C2SP tlog-witness: cosigns checkpoints of any log it is configured to follow."""
