"""Surface adapters: turn Slack, WhatsApp, CLI and scheduler input into gate calls."""
