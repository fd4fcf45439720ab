"""admin: the bodies of the `scanner-agent` commands (status, queue, fleet, doctor, snapshot, the
hardware tests IT runs over SSH; run, parse and decode); agent/cli.py holds their arguments and
the one mapping of a failure to an exit status."""
