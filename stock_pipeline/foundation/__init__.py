"""What every layer may use and that depends on no other layer: the validated settings
(`settings.py`, the one reader of the environment), the exception classes (`errors.py`),
structlog set-up with secret redaction (`logs.py`), OAuth token pairs with their
encryption at rest (`tokens.py`), and single flight (`single_flight.py`: callers asking
for the same work at once share one doing of it)."""
