"""PostgreSQL: the truth. SQL lives here, one module per aggregate."""
