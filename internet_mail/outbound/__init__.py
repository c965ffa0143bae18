"""Outbound Internet mail: a durable queue, its retry schedule, delivery status
notifications and the runner that delivers by SMTP (docs/smtp.md, "Outbound mail").

Sans-IO: :mod:`~internet_mail.outbound.state` (the envelope and its file format),
:mod:`~internet_mail.outbound.schedule` (what to try when), :mod:`~internet_mail.outbound.dsn`
(RFC 3464 reports). Drivers: :mod:`~internet_mail.outbound.queue` (files, fsync, a lock),
:mod:`~internet_mail.outbound.runner` (trio), :mod:`~internet_mail.outbound.dkim_sign`
(dkimpy, which loads dnspython and so ``socket``).
"""
