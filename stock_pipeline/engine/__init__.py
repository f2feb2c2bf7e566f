"""The write engine: applies an account's write plan to Allegro (batch quantity
commands and their tasks, PATCHes, publication commands) through the Allegro adapter,
recording each write in the store's audit before it is sent and its outcome after, so a
killed process never leaves a phantom success. It knows nothing of Dagster."""
