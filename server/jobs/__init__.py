"""Jobs: an accepted request (job.py), the queue and its one worker thread (queue.py), and the
log of how each ended (log.py)."""
