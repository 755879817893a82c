"""A bare Django async SSE view: the floor that `bench/sse.py` compares the project's token streams with."""
