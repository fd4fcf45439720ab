"""admin: the commands hospital IT runs over SSH (status, queue, feedback test, doctor)."""
