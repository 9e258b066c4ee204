"""Domain logic as plain functions taking the session first; callers own the transaction."""
