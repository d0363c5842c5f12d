"""The served names kept equal to PostgreSQL: full loads and the change-log follower.

The one place that reads the store to fill the in-memory cache (``cache/``
knows no SQL, ``store/`` knows no cache).
"""
