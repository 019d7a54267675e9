"""The Slack surface: Bolt listeners, Block Kit, the step-up modal, Events API retries, and
what each outbox notice says in Slack."""
