"""Surface-neutral commands: the grammar of `/wa-role`, `/wa-2fa` and `/wa-audit`, the
replies they give, and the access review's one sequence. Slack, the console and (next)
WhatsApp and an HTTP API parse and answer through these."""
