"""meetinghooks domain: config, models and services. Imports neither Flask nor Celery."""
