"""Differential privacy: a task's DP settings (``config``), accounting and budget
(``accounting``), the noise the coordinator adds (``central``) or the devices add
(``device``), and a task's privacy from round to round (``rounds``).

Sans I/O: the round driver reads and writes the store. May import: the floor
(``errors``, ``records``, ``validation``); ``dp_accounting`` and ``fedrt.protocol`` from
outside.
"""
