"""Composition of wa-access: configuration, the Flask app, the CLI."""
