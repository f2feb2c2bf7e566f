"""Telling people: the Telegram Bot API adapter (`telegram.py`) that sends failure and
bad-rows alerts to `ALLEGRO_ERROR_NOTIFICATION_CHAT_ID`, with retries and redaction."""
