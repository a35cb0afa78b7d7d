"""Which devices a round uses and when the others come back: the task's filters
(``eligibility``), the uniform cohort sampled from the check-in pool (``sampling``), SecAgg+
cohorts (``cohort_split``) and pace steering (``pace``).

Sans I/O (time and randomness are arguments). May import: the floor (``validation`` for
``PaceConfig``).
"""
