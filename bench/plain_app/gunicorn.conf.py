"""gunicorn settings of the plain counterpart: stock, except what must match ours.

gthread like ours; the benchmark gives ``--bind``, ``--workers`` and ``--threads`` (ours'
defaults) on the command line. The access log is on, as ours is by default, with a line of
the same fields plus the time (ours' lines carry a timestamp too), through gunicorn's own
handler and formatter. No preload, no hooks, no logging configuration.
"""

worker_class = "gthread"
accesslog = "-"
access_log_format = '%(t)s %(h)s "%(r)s" %(s)s %(b)s %(M)sms %(p)s'
# No control socket, as ours: gunicorn 27 would open one in the home directory, which the
# requests never use and two servers started at once would share.
control_socket_disable = True
