"""``dpolab-grade``: a class's submissions to grades and feedback in one command.

Built on nbgrader's own converters (``autograde``, ``generate_feedback``) and its gradebook.
One idea per module:

``inputs``         find the submissions (nbgrader layout, flat LMS folders, zips) and check each file
``course``         the grader's course: the release and its gradebook, generated once from ``solutions/``
``sandbox``        the student's kernel: resource limits (prlimit) and file isolation (bubblewrap)
``preprocessors``  output size caps, tracebacks of hidden tests removed from feedback
``worker``         one notebook of one student, graded in its own scratch course (a subprocess)
``gradebook``      the per-notebook results merged into one gradebook by one writer
``reports``        grades.csv, cells.csv
``runner``         the plan: what to (re)grade, in parallel, with a wall-clock limit per notebook
``cli``            the ``dpolab-grade`` command
"""
