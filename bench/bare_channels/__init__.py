"""A bare Channels consumer: the floor that `bench/fanout.py` compares the project with."""
