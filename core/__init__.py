"""What every stage shares: the typed config, the lake layout and engine loading (no engine job, no orchestration)."""
