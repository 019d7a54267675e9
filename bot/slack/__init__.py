"""Slack's edge: the Bolt app and its thin Flask adapter, what a Slack request must be
before Bolt sees it (signature over raw bytes, then shape), and the bot token's check."""
