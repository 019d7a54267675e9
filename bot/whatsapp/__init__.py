"""WhatsApp's edge: Meta's webhook door (signature over raw bytes, then shape, then the
body kept for a worker) and, with the sending issue, the Graph API client."""
