"""The plan: what must change for the world to match a commit, as a DAG of steps (pure)."""
