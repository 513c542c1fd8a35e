"""``dpolab-grade``: the DPO Lab's grader, a distribution of its own (it depends on ``dpolab``).

A class's submissions to grades and feedback in one command, built on nbgrader's own converters
(``autograde``, ``generate_feedback``) and its gradebook; the same sandbox and judge in plain
``nbgrader autograde`` and formgrader (``use_judge(c)``). One idea per module:

``inputs``           find the submissions (nbgrader layout, flat LMS folders, zips) and check each file
``build``            what the grader's builds depend on (a digest) and a module run apart
``course``           the grader's course: the release and its gradebook, generated once from ``solutions/``
``fixtures``         the records of the hidden tests on the solutions: the expected values, made once
``judge``            a student's records against the fixtures, outside the kernel
``isolation``        fail closed: the kernel isolated as asked, or nothing graded
``sandbox``          the student's kernel: resource limits (prlimit), file and network isolation (bubblewrap)
``zygote``           kernels forked from one warm process per student (torch imported once)
``student_sandbox``  one student's sandbox with its zygote and the kernelspec that starts its kernels
``watchdog``         the kernel's process tree watched from outside: killed past the process or memory limit
``preprocessors``    hidden tests judged after execution, output caps, hidden tracebacks removed
``kernel_client``    the kernel client of every graded notebook: a missed wake-up costs a second
``pipeline``         nbgrader's autograde and feedback pipelines with the judge (``use_judge(c)``)
``nbgrader_sandbox`` the sandbox in plain nbgrader's ``Execute`` (one per student)
``worker``           one student's notebooks, each in its own scratch course (a subprocess)
``gradebook``        the per-student results merged into one gradebook by one writer
``classroom``        due dates and late policies; ``lms``: rosters and LMS files
``reports``          grades.csv, cells.csv, report.html (``class_report``: the class's figures)
``runner``           the plan: what to (re)grade, in parallel, with a wall-clock limit per notebook
``shards``           ``--shard K/N`` (a stable share of the class by a hash of the id) and ``merge``
``cli``              the ``dpolab-grade`` command
``release``          the release's stamps (Colab cell, badges) in ``generate_assignment``
``student_package``  the ``dpolab-graded-course`` command: release notebooks and a dpolab without the
                     reference, for students (and, mounted by the sandbox, for the grader's kernel)
"""

# What is in force (issue 9). The command, layouts and safe zips, restored grade cells, the per-cell
# timeout and per-notebook wall-clock limit, memory and file-size limits, output caps, ungradable
# rows with reasons, hidden tests and their traceback lines out of the feedback, parallel workers
# merged by one writer, re-grading only what changed. Hidden tests are judged outside the kernel:
# they record observations (records), the grader compares them with fixtures made from the
# solutions (fixtures) after the kernel has returned (preprocessors.JudgeRecords). The kernel runs
# under bubblewrap with the student package (student_package) mounted over its dpolab, over ipc
# sockets with no network; the worker's watchdog kills its tree past Limits.max_processes
# processes or memory_mb of resident memory; prlimit --nproc is a backstop for a non-root grader.
# Not limited: CPU share (cgroups would need a delegated cgroup or systemd-run); the total size of
# the sandbox's in-memory /tmp and work folder (limited per file by RLIMIT_FSIZE; bwrap >= 0.7 has
# --size for the tmpfs).
# Issue 13: the same judge in plain `nbgrader autograde` and formgrader (pipeline.use_judge in
# nbgrader_config.py; fixtures made on first use and cached); without it a hidden test fails its
# cell (records.Probe.send, fail closed). Students missing notebooks are `incomplete`, not
# `ungradable`; OUT is an nbgrader course folder formgrader opens; report.html (class_report).
