"""The Allegro REST API adapter: what every call shares (`http.py`: media type, error
bodies, backoff), OAuth (`auth.py`: refresh grant, device flow, client credentials) and
the sale API client (`client.py`: offer listing, batch quantity commands, PATCHes,
publication commands), every call drawn from a rate limiter it is given. The same code
talks to the real API, the sandbox or the simulator: only the two URLs differ."""
