"""Which devices a round uses and when the others come back: pace steering (``pace``).

Sans I/O (time is an argument). May import: the floor (``validation`` for ``PaceConfig``).
"""
