"""JSON API blueprints under /v1."""
