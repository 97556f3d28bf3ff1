"""Jobs: an accepted request (job.py), the queue and a thread per worker (queue.py), which worker runs
a job (routing.py), what a worker is (worker.py), and the log of how each job ended (log.py)."""
