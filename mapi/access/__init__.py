"""Who may do what: the user directory, logon, the logon throttle and folder permissions."""
