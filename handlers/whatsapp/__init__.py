"""The WhatsApp surface: Meta's notifications read as typed events (`events.py` holds the
types, `parsing.py` reads every entry, change, message and status into them); turning
them into gate calls (customers, conversations, statuses) comes with their processing."""
