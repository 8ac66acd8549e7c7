"""Code jobs on the node: the job service, DP jobs on their timetable, reviewed jobs, the fair
queue, and running code in the sandbox."""
