"""Upstream CNAM sources (issue #17): the names cnamd does not hold, asked of paid
providers after every local scope missed, paid once for the whole deployment.

``source`` is what one provider answers (and its clients: ``opencnam``,
``http_json``, ``sip_dip``), ``guard`` protects the money and the provider
(concurrency, rate, daily budget, circuit breaker), ``chain`` asks the sources
in order and shares one request among concurrent misses, ``writer`` stores the
answers in batches (the change log brings them to every cache).
"""
